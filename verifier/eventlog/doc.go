// Package eventlog replays measured-boot event logs against quoted measurement registers and
// exposes only what the replay proves.
//
// Two log kinds are read, both in the TCG event log format:
//
//   - a TCG PC Client log of a (v)TPM's PCRs, SHA-1 format or crypto-agile, replayed against the
//     PCR values of one bank of a verified TPM quote (ReplayTCG). Format: TCG PC Client Platform
//     Firmware Profile Specification (PFP), Family 2.0, §10 "Event Logging" — TCG_PCClientPCREvent
//     (the SHA-1 record, always the first), TCG_EfiSpecIDEvent ("Spec ID Event03") and
//     TCG_PCR_EVENT2 (crypto-agile records).
//     https://trustedcomputinggroup.org/resource/pc-client-specific-platform-firmware-profile-specification/
//   - a TDX confidential-computing event log (CCEL), replayed against RTMR0–3 of a verified TD
//     quote (ReplayCCEL). It is a crypto-agile log whose register field holds a CC measurement
//     register index: 0 = MRTD, 1–4 = RTMR0–3 (UEFI 2.10 §38.1 "Virtual Platform CC Event Log" and
//     EFI_CC_MEASUREMENT_PROTOCOL.MapPcrToMrIndex, §38.2; Intel TDX GHCI §4.3.3 "CC-Event Log").
//     The ACPI "CC Event Log ACPI Table" (ACPI 6.5) only locates the log area; this package reads the
//     area itself, trailing 0xFF padding included.
//     https://uefi.org/specs/UEFI/2.10/38_Confidential_Computing.html
//     https://uefi.org/specs/ACPI/6.5/05_ACPI_Software_Programming_Model.html#cc-event-log-acpi-table
//     https://cdrdv2.intel.com/v1/dl/getContent/726790
//
// # What a successful replay proves
//
// For every replayed register R, folding the digests of the log's R events in log order,
// R := H(R ‖ digest), from R's start value (its reset value, or for PCR0 the locality or H-CRTM
// start the log declares, below) yields the value the caller took from a verified quote. So each Event's register, digest and position among R's events are proven: that digest
// was extended into R, in that order, and nothing else was. Nothing else in a record is covered:
//
//   - the event type is NOT covered by any digest: Event.Type is informational. Decisions in
//     this package and in its callers use register and digest only;
//   - event data is covered only when the digest happens to be the hash of that data, which
//     depends on the (unproven) type. This package reads data in one place, the GRUB strings
//     below, and only after checking the digest against it.
//
// Registers are replayed only when the caller passes their values; events of other registers —
// CCEL index 0 (MRTD, built by the TDX module from TD pages, not by extends, so no log can replay
// to it), PCRs outside the quote, out-of-range indices — are unproven and never reach Log.Events.
// EV_NO_ACTION records are not extended (PFP §10) and never appear either.
//
// A replayed register with no extending event proves that nothing was extended, so its quoted
// value must be its reset value: zero for PCR0–16, PCR23 and every RTMR, all ones for PCR17–22
// (the DRTM PCRs; a DRTM launch is logged in a separate log this package does not read, so it
// fails here). go-eventlog on its own accepts any value for such a register; this package does
// not (ErrReplay). A quoted all-zero PCR that the log never touches replays, with no events.
//
// # Kernel command lines
//
// GRUB measures each command and the kernel command line as strings into PCR8 (TCG) or RTMR2
// (CCEL) and logs them behind a text prefix such as "grub_cmd: " or "kernel_cmdline: "
// (https://www.gnu.org/software/grub/manual/grub/grub.html#Measured-Boot). For every replayed
// event of that register whose data starts with one of GRUB's prefixes, the digest must equal
// the hash of the text after the prefix, with or without one trailing NUL; otherwise the log
// was altered after measurement and the whole replay fails (ErrReplay). Log.KernelCmdlines holds
// the text of the events labelled "kernel_cmdline: " (or the older "grub_kernel_cmdline "), in
// log order, without a trailing NUL.
//
// Proven: each string was extended into PCR8/RTMR2 at that position. NOT proven: the label —
// the prefix and the type are outside the digest, so a string GRUB measured as some other
// command can be relabelled as a kernel command line and the real one relabelled as a command.
// A policy that pins the kernel command line should therefore require every entry to be
// acceptable and at least one to be present, and pin the register value where it can.
// Command lines measured by other loaders (systemd-boot and the Linux EFI stub log UTF-16
// load options into PCR8/PCR9/PCR12) are not extracted. go-eventlog's extract package is not
// used for this: its decisions follow the untrusted event type (it skips EV_EVENT_TAG events,
// requires EV_IPL) and tcg.Event.UntrustedType panics on a type it does not know, which any
// guest can write.
//
// # go-eventlog, and what this package adds
//
// Replay is go-eventlog's tcg.ParseEventLog followed by EventLog.Verify (tcg.ParseAndReplay,
// split so that parse and replay failures map to different errors) with register.PCRBank /
// register.RTMRBank registers. Its behaviours that matter here:
//
//   - Verify replays only the registers it is given and returns only their events.
//   - A register with no extending events is reported as replayed whatever its value (above).
//   - When PCR5 fails to replay, Verify retries with synthetic "Exit Boot Services Invocation",
//     "…Returned with Success/Failure" EV_EFI_ACTION events appended to PCR5 (tcg.
//     EventlogWorkarounds), for firmware that extends them without logging them. Such a log does
//     not replay as submitted, so this package rejects any result that holds an event beyond the
//     log's last record (ErrReplay). CCEL indices never reach 5, so no workaround applies there.
//   - The type steers replay in three documented places: EV_NO_ACTION records are skipped, a
//     "StartupLocality" EV_NO_ACTION record sets PCR0's initial locality byte, and an
//     EV_EFI_HCRTM_EVENT first event starts its PCR at 0…04 (PFP §10). A forged type there can
//     only make a replay fail or drop an event from Log.Events, never make an unextended digest
//     appear.
//   - Parsing is unbounded (every record of any log size is materialised, the replay error path
//     copies them all, each workaround clones the log) and, per digest, loops over every
//     algorithm of the Spec ID event; algorithm IDs are truncated to 8 bits. This package
//     therefore pre-scans the structure first (see scan.go): size, record count (MaxEvents),
//     algorithm count, sizes and uniqueness, so that go-eventlog's work is linear and capped.
//
// # Errors
//
// ErrMalformed: the log does not parse, is over attest.MaxEventLogSize or MaxEvents, or has a
// structure this package refuses (see scan.go). ErrReplay: the log parses but does not prove the
// quoted values. The verifier maps them to ear.CodeEventLogMalformed and ear.CodeEventLogReplay.
// Any other error means the caller broke the argument contract of the function it called.
package eventlog
