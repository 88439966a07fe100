package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/api"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// demoFleet are the simulated VMs, in the order they take turns.
var demoFleet = []struct {
	name     string
	platform attest.Platform
}{
	{"vm-tdx-1", attest.PlatformTDX}, {"vm-snp-1", attest.PlatformSNP},
	{"vm-tdx-2", attest.PlatformTDX}, {"vm-snp-2", attest.PlatformSNP},
	{"vm-tdx-3", attest.PlatformTDX}, {"vm-snp-3", attest.PlatformSNP},
}

// demoCase is what a VM does wrong in one round, and what the verifier must answer.
type demoCase struct {
	what  string
	fault servicetest.Fault
	// nonce picks the nonce: "" the VM's own fresh challenge, "replay" the previous round's
	// evidence again, "other" a challenge issued to another VM, "forged" a nonce the verifier
	// never issued, "expired" a challenge the VM answers after its TTL.
	nonce string
	// want is the failure code for each platform (nil: affirming).
	want map[attest.Platform]ear.Code
}

// demoBad are the bad cases, in the order the demo plays them: every fifth round from round 3,
// which alternates between a TDX and an SEV-SNP VM, so each hardware fault is shown on both.
var demoBad = []demoCase{
	{what: "DEBUG enabled (host can read memory)", fault: servicetest.FaultDebug, want: hwCodes(ear.CodeTDXDebug, ear.CodeSNPDebug)},
	{what: "DEBUG enabled (host can read memory)", fault: servicetest.FaultDebug, want: hwCodes(ear.CodeTDXDebug, ear.CodeSNPDebug)},
	{what: "unexpected image (measurement)", fault: servicetest.FaultMeasurement, want: hwCodes(ear.CodeTDXMRTD, ear.CodeSNPMeasurement)},
	{what: "unexpected image (measurement)", fault: servicetest.FaultMeasurement, want: hwCodes(ear.CodeTDXMRTD, ear.CodeSNPMeasurement)},
	{what: "report altered after signing", fault: servicetest.FaultSignature, want: hwCodes(ear.CodeTDXQuoteSignature, ear.CodeSNPReportSignature)},
	{what: "report altered after signing", fault: servicetest.FaultSignature, want: hwCodes(ear.CodeTDXQuoteSignature, ear.CodeSNPReportSignature)},
	{what: "replay of the previous evidence", nonce: "replay", want: hwCodes(ear.CodeNonceMismatch, ear.CodeNonceMismatch)},
	{what: "nonce issued to another VM", nonce: "other", want: hwCodes(ear.CodeNonceMismatch, ear.CodeNonceMismatch)},
	{what: "nonce the verifier never issued", nonce: "forged", want: hwCodes(ear.CodeNonceMismatch, ear.CodeNonceMismatch)},
	{what: "report bound to another nonce", fault: servicetest.FaultNonceBinding, want: hwCodes(ear.CodeNonceMismatch, ear.CodeNonceMismatch)},
	{what: "answered after the nonce expired", nonce: "expired", want: hwCodes(ear.CodeNonceMismatch, ear.CodeNonceMismatch)},
}

// demoIsBad reports whether round n plays a bad case, and which.
func demoIsBad(n int) (demoCase, bool) {
	if n%5 != 3 {
		return demoCase{what: "genuine"}, false
	}
	return demoBad[(n/5)%len(demoBad)], true
}

func hwCodes(tdx, snp ear.Code) map[attest.Platform]ear.Code {
	return map[attest.Platform]ear.Code{attest.PlatformTDX: tdx, attest.PlatformSNP: snp}
}

// demoClock is the verifier's clock in the demo: real time, plus what the demo fast-forwards to
// show an expired nonce without waiting five minutes.
type demoClock struct {
	mu   sync.Mutex
	skew time.Duration
}

func (c *demoClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

func (c *demoClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skew += d
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rounds := fs.Int("rounds", 55, "attestation rounds; every fifth, from round 3, submits deliberately bad evidence")
	keep := fs.Bool("keep", false, "keep the data directory (evidence log, keys, state) instead of removing it")
	verbose := fs.Bool("verbose", false, "show the verifier's own log on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline demo [--rounds N] [--keep] [--verbose]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 || *rounds < 1 || *rounds > 1000 {
		fmt.Fprintln(stderr, "proofline demo: --rounds takes 1 to 1000, and there are no arguments")
		return exitUsage
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	dir, err := os.MkdirTemp("", "proofline-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "proofline demo: %v\n", err)
		return 1
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	d := &demo{out: stdout, dir: dir, rounds: *rounds, keep: *keep, logger: logger}
	if err := d.run(ctx); err != nil {
		fmt.Fprintf(stderr, "proofline demo: %v\n", err)
		return 1
	}
	if d.unexpected > 0 {
		fmt.Fprintf(stdout, "\n%d round(s) did not get the verdict they should have: see above.\n", d.unexpected)
		return 1
	}
	return exitOK
}

type demo struct {
	out        io.Writer
	dir        string
	rounds     int
	keep       bool
	logger     *slog.Logger
	base       string // the verifier's URL
	client     *http.Client
	tokens     map[string]string
	clock      *demoClock
	plat       *servicetest.Platforms
	unexpected int
}

// demoRound is one round's outcome.
type demoRound struct {
	n        int
	vm       string
	platform attest.Platform
	what     string
	answer   attestAnswer
	ok       bool
	bad      bool
}

type attestAnswer struct {
	LogIndex     uint64          `json:"log_index"`
	RecordSHA256 string          `json:"record_sha256"`
	Status       ear.Status      `json:"status"`
	Result       json.RawMessage `json:"result"`
	Token        string          `json:"token"`
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	routeKlog(d.logger)
	plat, err := servicetest.New(time.Now())
	if err != nil {
		return err
	}
	d.plat, d.clock = plat, &demoClock{}
	d.tokens = map[string]string{}
	var tokens []api.TokenConfig
	addToken := func(name string, role service.Role) {
		tok := hex.EncodeToString(randomToken())
		sum := sha256.Sum256([]byte(tok))
		d.tokens[name] = tok
		tokens = append(tokens, api.TokenConfig{Name: name, Role: role, SHA256: hex.EncodeToString(sum[:])})
	}
	for _, vm := range demoFleet {
		addToken(vm.name, service.RoleAgent)
	}
	addToken("key-release", service.RoleRelyingParty)
	addToken("auditor", service.RoleAuditor)

	reg := prometheus.NewRegistry()
	svc, err := service.Open(ctx, service.Config{DataDir: d.dir, Log: service.LogConfig{CheckpointInterval: 200 * time.Millisecond}},
		service.Env{TestMode: true, Logger: d.logger, Registerer: reg, Now: d.clock.Now, Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: plat.PolicyYAML})
	if err != nil {
		return err
	}
	svc.Start()
	srv, err := api.New(svc, api.Config{Tokens: tokens}, api.Options{Logger: d.logger, Registry: reg})
	if err != nil {
		svc.Close()
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		svc.Close()
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() {
		stop()
		<-served
		svc.Close()
	}()
	d.base, d.client = "http://"+ln.Addr().String(), &http.Client{Timeout: 30 * time.Second}

	keepNote := "removed at exit; --keep keeps it"
	if d.keep {
		keepNote = "kept"
	}
	d.printf("Proofline demo: a verifier service and simulated confidential VMs, all on this machine.\n\n")
	d.printf("  Verifier    %s (proofline serve on embedded defaults)\n", d.base)
	d.printf("  Data dir    %s (evidence log, keys, SQLite state; %s)\n", d.dir, keepNote)
	d.printf("  Test mode   the VMs sign with the project's fake Intel and AMD PKIs, which the verifier trusts\n")
	d.printf("              only in test mode: every result says test_roots: true.\n")
	d.printf("  Policy      %q pins the VMs' launch measurements; DEBUG off; vendor collateral required.\n", "simulated-fleet")
	d.printf("  Each round  a VM asks GET /v1/challenge for a nonce, binds it into its hardware report and\n")
	d.printf("              submits the evidence to POST /v1/attest. The verifier appraises it, writes a signed\n")
	d.printf("              record to the evidence log, and only then answers: verdict, result token, log index.\n\n")

	results, err := d.attestRounds(ctx)
	if err != nil {
		return err
	}
	good, err := d.relyingParty(ctx, results)
	if err != nil {
		return err
	}
	if err := d.audit(ctx, good); err != nil {
		return err
	}
	d.printf("\nDone in %.1fs. Next: `proofline serve --test-mode` runs the same verifier as a service (README.md).\n", time.Since(start).Seconds())
	return nil
}

func (d *demo) attestRounds(ctx context.Context) ([]demoRound, error) {
	d.printf("Verdicts: affirming = the VM is what the policy expects; contraindicated = refused, with the\n")
	d.printf("failure codes of verifier/README.md under \"why\"; log = the index of the verdict's signed record.\n\n")
	d.printf(" round  VM        platform  evidence                               verdict          why                            log\n")
	var (
		results  []demoRound
		previous []byte // the previous round's evidence, for the replay
		start    = time.Now()
	)
	for n := 1; n <= d.rounds; n++ {
		vm := demoFleet[(n-1)%len(demoFleet)]
		c, _ := demoIsBad(n)
		var nonce []byte
		var err error
		switch c.nonce {
		case "", "expired":
			nonce, err = d.challenge(ctx, vm.name)
		case "other":
			nonce, err = d.challenge(ctx, demoFleet[n%len(demoFleet)].name)
		case "forged":
			nonce = randomToken()
		}
		if err != nil {
			return nil, err
		}
		ev := previous
		if c.nonce != "replay" || ev == nil {
			if ev, err = d.plat.Evidence(vm.platform, nonce, servicetest.RuntimeData(vm.name), c.fault); err != nil {
				return nil, err
			}
		}
		if c.nonce == "replay" {
			vm = demoFleet[(n-2)%len(demoFleet)] // the same VM resubmits its previous evidence
		}
		if c.nonce == "expired" {
			d.clock.Advance(service.DefaultNonceTTL + time.Second)
		}
		var a attestAnswer
		if err := d.call(ctx, http.MethodPost, "/v1/attest", vm.name, ev, &a); err != nil {
			return nil, fmt.Errorf("round %d: %w", n, err)
		}
		previous = ev
		r := demoRound{n: n, vm: vm.name, platform: vm.platform, what: c.what, answer: a, bad: c.want != nil}
		var res ear.Result
		if err := json.Unmarshal(a.Result, &res); err != nil {
			return nil, err
		}
		codes := failureCodes(&res)
		if c.want == nil {
			r.ok = a.Status == ear.StatusAffirming
		} else {
			r.ok = a.Status == ear.StatusContraindicated && slices.Contains(codes, string(c.want[vm.platform]))
		}
		why := strings.Join(codes, ",")
		mark := ""
		switch {
		case !r.ok:
			mark = "  ✗ UNEXPECTED"
			d.unexpected++
		case r.bad:
			mark = "  ✓ caught"
		}
		if len(why) > 30 {
			why = why[:29] + "…"
		}
		line := fmt.Sprintf(" %5d  %-9s %-9s %-38s %-16s %-30s #%-4d%s", n, vm.name, vm.platform, c.what, a.Status, why, a.LogIndex, mark)
		d.printf("%s\n", strings.TrimRight(line, " "))
		results = append(results, r)
	}
	var affirming, bad, caught int
	for _, r := range results {
		switch {
		case r.bad:
			bad++
			if r.ok {
				caught++
			}
		case r.ok:
			affirming++
		}
	}
	d.printf("\n%d attestations in %.1fs: %d affirming, %d contraindicated. ", len(results), time.Since(start).Seconds(), affirming, len(results)-affirming)
	if caught == bad && affirming == len(results)-bad {
		d.printf("Every bad case was caught and no genuine VM was refused.\n")
	} else {
		d.printf("%d of %d bad cases caught, %d of %d genuine VMs affirmed.\n", caught, bad, affirming, len(results)-bad)
	}
	return results, nil
}

// relyingParty shows what a key-release service does with result tokens (verifier/rp), and
// records its decision as evidence (POST /v1/events).
func (d *demo) relyingParty(ctx context.Context, results []demoRound) (*demoRound, error) {
	jwks, err := d.get(ctx, "/.well-known/jwks.json", "")
	if err != nil {
		return nil, err
	}
	opts := rp.Options{Audience: service.DefaultAudience, Issuer: service.DefaultIssuer, Now: d.clock.Now}
	strict, err := rp.New(jwks, opts)
	if err != nil {
		return nil, err
	}
	opts.AllowTestRootsUnsafe = true
	testing, err := rp.New(jwks, opts)
	if err != nil {
		return nil, err
	}
	var good, bad *demoRound
	for i := range results {
		r := &results[i]
		if r.ok && !r.bad {
			good = r
		}
		if r.ok && r.bad && bad == nil {
			bad = r
		}
	}
	d.printf("\nRelying party (verifier/rp, as the key-release example in hack/keyrelease uses it):\n")
	if good == nil {
		return nil, nil
	}
	cl, err := testing.VerifyJWT(good.answer.Token)
	if err != nil {
		d.unexpected++
		d.printf("  round %d's token: REFUSED, unexpectedly: %v\n", good.n, err)
		return nil, nil
	}
	d.printf("  round %2d's token: accepted — %s, fresh, for %s, names record #%d and policy %s\n", good.n, cl.Status, cl.Subject, cl.LogIndex, cl.PolicyID)
	if bad != nil {
		_, err := testing.VerifyJWT(bad.answer.Token)
		d.printf("  round %2d's token: refused — %v\n", bad.n, firstLine(err))
	}
	_, err = strict.VerifyJWT(good.answer.Token)
	d.printf("  round %2d's token outside test mode: refused — %v\n", good.n, firstLine(err))
	ev := map[string]any{
		"subject": cl.Subject, "platform": cl.Platform, "resource": "demo-database-password", "decision": "release",
		"attestation_record_sha256": hex.EncodeToString(cl.RecordSHA256[:]),
	}
	body, _ := json.Marshal(ev)
	var rec struct {
		LogIndex uint64 `json:"log_index"`
	}
	if err := d.call(ctx, http.MethodPost, "/v1/events", "key-release", body, &rec); err != nil {
		return nil, err
	}
	d.printf("  its decision to release the key to %s is evidence too: key_release record #%d\n", cl.Subject, rec.LogIndex)
	return good, nil
}

func firstLine(err error) string {
	if err == nil {
		return "no error (UNEXPECTED)"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// audit shows what an auditor sees: the records, the signed checkpoint and the inclusion proof of
// the record the relying party relied on.
func (d *demo) audit(ctx context.Context, good *demoRound) error {
	var keys service.Keys
	if err := d.call(ctx, http.MethodGet, "/v1/keys", "auditor", nil, &keys); err != nil {
		return err
	}
	v, err := note.NewVerifier(keys.LogKey)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	var last uint64
	for start := uint64(0); ; {
		var page struct {
			Records []struct {
				LogIndex uint64 `json:"log_index"`
				Kind     string `json:"kind"`
			} `json:"records"`
			Next *uint64 `json:"next"`
		}
		if err := d.call(ctx, http.MethodGet, fmt.Sprintf("/v1/records?start=%d&limit=1000", start), "auditor", nil, &page); err != nil {
			return err
		}
		for _, r := range page.Records {
			counts[r.Kind]++
			last = r.LogIndex
		}
		if page.Next == nil {
			break
		}
		start = *page.Next
	}
	// Checkpoints are published every 200 ms here: wait for one that covers every record.
	var cp *log.Checkpoint
	for deadline := time.Now().Add(20 * time.Second); ; {
		raw, err := d.get(ctx, "/v1/log/checkpoint", "auditor")
		if err != nil {
			return err
		}
		if cp, _, _, err = log.ParseCheckpoint(raw, v.Name(), v); err != nil {
			return fmt.Errorf("the checkpoint does not verify: %w", err)
		}
		if cp.Size > last {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no checkpoint covering every record was published")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.printf("\nEvidence log (what an auditor checks, offline if they like):\n")
	var kinds []string
	for _, k := range []string{"attestation", "policy_change", "key_release"} {
		if counts[k] > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	d.printf("  records           %s (GET /v1/records)\n", strings.Join(kinds, ", "))
	d.printf("  checkpoint        %s, %d records, root %x… (a signed note: GET /v1/log/checkpoint)\n", cp.Origin, cp.Size, cp.Hash[:8])
	if good == nil {
		return nil
	}
	idx := good.answer.LogIndex
	var p struct {
		Hashes [][]byte `json:"hashes"`
	}
	if err := d.call(ctx, http.MethodGet, fmt.Sprintf("/v1/log/proofs/inclusion/%d?tree_size=%d", idx, cp.Size), "auditor", nil, &p); err != nil {
		return err
	}
	leaf, err := d.get(ctx, fmt.Sprintf("/v1/records/%d", idx), "auditor")
	if err != nil {
		return err
	}
	sum := sha256.Sum256(leaf)
	perr := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), p.Hashes, cp.Hash)
	switch {
	case perr != nil:
		d.unexpected++
		d.printf("  inclusion proof   of record #%d: FAILED: %v\n", idx, perr)
	case hex.EncodeToString(sum[:]) != good.answer.RecordSHA256:
		d.unexpected++
		d.printf("  record #%d is not the record round %d's answer named\n", idx, good.n)
	default:
		d.printf("  inclusion proof   record #%d, which round %d's token names, is in that checkpoint (%d hashes, verified)\n", idx, good.n, len(p.Hashes))
	}
	return nil
}

// challenge asks for a nonce as vm.
func (d *demo) challenge(ctx context.Context, vm string) ([]byte, error) {
	var ch struct {
		Nonce []byte `json:"nonce"`
	}
	if err := d.call(ctx, http.MethodGet, "/v1/challenge", vm, nil, &ch); err != nil {
		return nil, err
	}
	return ch.Nonce, nil
}

// call sends a request as the named principal and decodes a 2xx JSON answer into out.
func (d *demo) call(ctx context.Context, method, path, as string, body []byte, out any) error {
	b, err := d.do(ctx, method, path, as, body)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func (d *demo) get(ctx context.Context, path, as string) ([]byte, error) {
	return d.do(ctx, http.MethodGet, path, as, nil)
}

func (d *demo) do(ctx context.Context, method, path, as string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if as != "" {
		req.Header.Set("Authorization", "Bearer "+d.tokens[as])
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func failureCodes(r *ear.Result) []string {
	var out []string
	for _, f := range r.Failures {
		if !slices.Contains(out, string(f.Code)) {
			out = append(out, string(f.Code))
		}
	}
	return out
}

func randomToken() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand crashes the program instead)
	return b
}
