package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// browserEvents records what a tab did: every URL it requested and every console, log or
// exception text.
type browserEvents struct {
	mu       sync.Mutex
	requests []string
	messages []string
}

func (b *browserEvents) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, e.Request.URL)
	case *cdplog.EventEntryAdded:
		b.messages = append(b.messages, e.Entry.Text)
	case *runtime.EventConsoleAPICalled:
		for _, a := range e.Args {
			b.messages = append(b.messages, string(a.Value))
		}
	case *runtime.EventExceptionThrown:
		b.messages = append(b.messages, e.ExceptionDetails.Text)
	}
}

func (b *browserEvents) snapshot() (requests, messages []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.messages...)
}

// newBrowser starts headless Chromium with no network of its own (no background networking,
// component updates, sync or QUIC) and a fresh profile, and returns a tab. It skips the test
// when Chromium is not installed, except under CI=true, where that is a failure.
func newBrowser(t *testing.T) (context.Context, *browserEvents) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (%v): .ci/run installs Debian's chromium package", chromiumPath, err)
		}
		t.Skipf("skipping the browser test: %s is missing (apt-get install chromium, as .ci/run does)", chromiumPath)
	}
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1600),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ev := &browserEvents{}
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(ev.listen))
	t.Cleanup(func() { // before the profile directory is removed (cleanups run last-in first-out)
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser and the tab
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	return context.WithValue(ctx, eventsKey{}, ev), ev
}

// within runs actions with a deadline: a guard against a hung browser, never a timed assertion.
func within[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		if ev, ok := ctx.Value(eventsKey{}).(*browserEvents); ok {
			requests, messages := ev.snapshot()
			t.Logf("the tab's requests: %q\nits console: %q", requests, messages)
		}
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// eventsKey carries a tab's browserEvents in its context, for failure messages.
type eventsKey struct{}

func count(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	nodes := within(t, ctx, "query "+sel, chromedp.Nodes(chromedp.CSSAll(sel), chromedp.AtLeast(0)))
	return len(nodes)
}

// checkScreenshot decodes a PNG screenshot and wants a page that rendered: mostly background,
// but with a good share of non-white pixels and the chart colours among them.
func checkScreenshot(t *testing.T, name string, data []byte, wantColours ...[3]uint8) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s screenshot: %v", name, err)
	}
	if dir := os.Getenv("PROOFLINE_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, name+".png"), data, 0o644)
	}
	b := img.Bounds()
	colours := map[[3]uint8]int{}
	nonWhite, total := 0, b.Dx()*b.Dy()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			c := [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8)}
			colours[c]++
			if c[0] < 240 || c[1] < 240 || c[2] < 240 {
				nonWhite++
			}
		}
	}
	if total == 0 || nonWhite*100 < total || len(colours) < 8 {
		t.Fatalf("%s screenshot looks blank: %dx%d, %d non-white pixels, %d colours", name, b.Dx(), b.Dy(), nonWhite, len(colours))
	}
	for _, want := range wantColours {
		if colours[want] < 50 {
			t.Errorf("%s screenshot: only %d pixels of the chart colour #%02x%02x%02x", name, colours[want], want[0], want[1], want[2])
		}
	}
}

// Acceptance 4: the HTML report opens in Chromium with no network and no JavaScript, and its
// charts, gap table and criteria rendered; the auditor UI, served by `proofline serve`, signs in
// with an auditor token, searches records, opens one (verdict, claims, an inclusion proof it
// checks in the browser) and draws the charts; both screenshots are not blank.
func TestAuditorBrowser(t *testing.T) {
	f := newReportFixture(t)
	ctx, ev := newBrowser(t)
	green := [3]uint8{0x2e, 0x7d, 0x32}

	// The report, from file://, with script execution disabled and every http(s) URL blocked. The
	// keys are pinned (else the banner is amber: TestAuditReportKeysNotPinned).
	report := filepath.Join(t.TempDir(), "report.html")
	if code, out, errOut := runCLI(t, append([]string{"audit", "report", f.bundle, "--inventory", f.inventory, "--out", report, "--quiet"}, f.pins()...)...); code != exitContraindicated {
		t.Fatalf("report: %d\n%s%s", code, out, errOut) // the offline VM's gap: exit 1, report written
	}
	within(t, ctx, "block the network", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: []*network.BlockPattern{
			{URLPattern: "http://*:*/*", Block: true}, {URLPattern: "https://*:*/*", Block: true},
		}}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	within(t, ctx, "open the report", chromedp.Navigate("file://"+report))
	for sel, min := range map[string]int{
		"#verdict.pass":                     1,
		"#verdict.selfvouched":              0,
		"#test-roots-note":                  1,
		"#chart-verdicts text.test-roots":   1,
		"#chart-verdicts rect.bar":          1,
		"#chart-failures rect.bar":          1,
		"#chart-tcb rect.bar":               1,
		"#chart-changes circle.point":       2,
		"#gap-table tbody tr":               4,
		"#gap-list tbody tr":                1,
		"#criteria-table tbody tr":          5,
		"#change-table tbody tr":            2,
		"#failure-table tbody tr":           1,
		"svg.chart[role=img] > title":       4,
		"head meta[http-equiv]":             1,
		"#scope + dl.facts dt":              4,
		"#criteria-table td strong":         5,
		"#verification ~ ul.tight > li":     5,
		"#gaps ~ table#gap-table th":        7,
		"body script, link[rel=stylesheet]": 0,
	} {
		if n := count(t, ctx, sel); (min == 0 && n != 0) || n < min {
			t.Errorf("report: %d × %q, want %s%d", n, sel, map[bool]string{true: "", false: "at least "}[min == 0], min)
		}
	}
	text := within(t, ctx, "criteria text", chromedp.Text(chromedp.ID("criteria-table")))
	for _, want := range []string{"CC6.1", "CC7.2", "CC8.1", "PI1.x", "A1.x", "every VM that ran exists in the inventory"} {
		if !strings.Contains(text, want) {
			t.Errorf("criteria lack %q", want)
		}
	}
	shot := within(t, ctx, "report screenshot", chromedp.FullScreenshot(100))
	checkScreenshot(t, "report", shot, green)
	requests, messages := ev.snapshot()
	for _, u := range requests {
		if u != "file://"+report {
			t.Errorf("the report requested %s", u)
		}
	}
	for _, m := range messages {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Refused to") {
			t.Errorf("the report broke its own CSP: %s", m)
		}
	}

	// The UI, from a serve in test mode over the same data directory.
	within(t, ctx, "unblock, scripts on", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: []*network.BlockPattern{}}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false})
		return err
	}))
	tok := "auditor-browser-test-token"
	base := startAuditorServe(t, f.log.Dir, tok)
	within(t, ctx, "open the UI", chromedp.Steps(
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("token"), tok),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("app")),
		chromedp.WaitVisible(chromedp.CSS(`#chart-box-verdicts svg rect.bar`)),
		chromedp.SetValue(chromedp.ID("q-kind"), "attestation"),
		chromedp.SendKeys(chromedp.ID("q-subject"), "agent:vm-01"),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)),
		// The rows of this search (not of the one the page ran at sign-in).
		chromedp.WaitVisible(chromedp.CSS(`#results[data-query^="subject=agent%3Avm-01&kind=attestation"] tr[data-kind="attestation"] button.open`)),
	))
	if n := count(t, ctx, `#results tr[data-kind="attestation"]`); n < 5 || count(t, ctx, `#results tr`) != n {
		t.Errorf("search: %d attestation rows of %d", n, count(t, ctx, `#results tr`))
	}
	if subjects := within(t, ctx, "subjects", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#results tr td:nth-child(4)"), (td) => td.textContent)`)); len(subjects) == 0 || strings.Count(strings.Join(subjects, ","), "agent:vm-01") != len(subjects) {
		t.Errorf("search for agent:vm-01 shows %q", subjects)
	}
	within(t, ctx, "open a record", chromedp.Steps(
		chromedp.Click(chromedp.CSS(`#results tr[data-kind="attestation"] button.open`)),
		chromedp.WaitVisible(chromedp.CSS(`#proof-status.consistent, #proof-status.bad`)),
	))
	verdict := within(t, ctx, "verdict", chromedp.Text(chromedp.ID("record-verdict")))
	claims := within(t, ctx, "claims", chromedp.Text(chromedp.ID("record-claims")))
	proof := within(t, ctx, "proof", chromedp.Text(chromedp.ID("proof-status")))
	source := within(t, ctx, "verdict source", chromedp.Text(chromedp.ID("record-verdict-source")))
	if !strings.Contains(verdict, "affirming") && !strings.Contains(verdict, "contraindicated") || !strings.Contains(verdict, "test vendor roots") {
		t.Errorf("verdict: %q", verdict)
	}
	if !strings.Contains(claims, "measurement") && !strings.Contains(claims, "mr_td") {
		t.Errorf("claims: %q", claims)
	}
	// The proof's label says what was checked — the record's bytes, at its index, lead to the root
	// of the checkpoint the same server sent, whose signature the page does not check — and that
	// the verdict is the service's answer, naming the same bytes.
	if !strings.HasPrefix(proof, "Consistent with the checkpoint this server sent: with the proof, the record bytes served for index ") ||
		!strings.Contains(proof, "for independent proof, run proofline audit verify on an export") ||
		!strings.Contains(proof, "This concerns those bytes, not the verdict shown above, which is the service's answer for the record.") ||
		!strings.Contains(proof, "The answer names these same bytes by their SHA-256.") {
		t.Errorf("proof: %q", proof)
	}
	if !strings.HasPrefix(source, "The verifier service's answer for record ") || !strings.Contains(source, "does not decode the verdict") {
		t.Errorf("verdict source: %q", source)
	}
	// The in-browser inclusion check can fail: a flipped byte of the record, or the proof used at
	// another index, does not lead to the checkpoint's root.
	index := within(t, ctx, "record index", chromedp.Text(chromedp.ID("record-index")))
	checks := within(t, ctx, "inclusion check", chromedp.Evaluate[string](`(async () => {
		const h = {headers: {Authorization: "Bearer " + sessionStorage.getItem("proofline.auditor.token")}};
		const p = await (await fetch("/v1/log/proofs/inclusion/`+index+`", h)).json();
		const leaf = new Uint8Array(await (await fetch("/v1/records/`+index+`", h)).arrayBuffer());
		const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
		const hex = (a) => a === null ? "none" : Array.from(a, (x) => x.toString(16).padStart(2, "0")).join("");
		const root = hex(b64(p.checkpoint.split("\n")[2]));
		const P = window.prooflineInclusion, hashes = p.hashes.map(b64);
		const leafHash = await P.sha256(Uint8Array.of(0), leaf);
		const good = await P.rootFromProof(p.log_index, p.tree_size, leafHash, hashes);
		const moved = await P.rootFromProof(p.log_index + 1, p.tree_size, leafHash, hashes);
		leaf[leaf.length >> 1] ^= 1;
		const flipped = await P.rootFromProof(p.log_index, p.tree_size, await P.sha256(Uint8Array.of(0), leaf), hashes);
		return [hex(good) === root, hex(flipped) === root, hex(moved) === root].join(",");
	})()`, chromedp.EvalAwaitPromise))
	if checks != "true,false,false" {
		t.Errorf("in-browser inclusion check of record %s (valid, flipped byte, other index): %s, want true,false,false", index, checks)
	}
	// The export button fetches the window's bundle with the token in the header.
	within(t, ctx, "download the export", chromedp.Steps(
		chromedp.Click(chromedp.ID("export-download")),
		chromedp.WaitVisible(chromedp.CSS(`#export-status`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("export-status").textContent.startsWith("Downloaded ")`),
	))
	if st := within(t, ctx, "export status", chromedp.Text(chromedp.ID("export-status"))); !strings.Contains(st, "bytes: verify it with proofline audit verify") {
		t.Errorf("export status: %q", st)
	}
	for _, c := range []string{"verdicts", "failures", "tcb", "changes"} {
		if count(t, ctx, "#chart-box-"+c+" svg") != 1 {
			t.Errorf("chart %s missing", c)
		}
	}
	if count(t, ctx, "#chart-box-changes svg circle.point") < 2 || count(t, ctx, "#chart-box-tcb svg rect.bar") < 1 {
		t.Error("the changes or TCB chart has no marks")
	}
	stored := within(t, ctx, "session storage", chromedp.Evaluate[string](`sessionStorage.getItem("proofline.auditor.token") || ""`))
	loc := within(t, ctx, "location", chromedp.Location())
	if stored != tok || strings.Contains(loc, tok) {
		t.Errorf("token: stored %q, location %q", stored, loc)
	}
	shot = within(t, ctx, "UI screenshot", chromedp.FullScreenshot(100))
	checkScreenshot(t, "ui", shot, green)
	requests, messages = ev.snapshot()
	for _, u := range requests {
		if strings.Contains(u, tok) {
			t.Errorf("the token is in a URL: %s", u)
		}
	}
	for _, m := range messages {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Refused to") || strings.Contains(m, "Uncaught") {
			t.Errorf("console: %s", m)
		}
	}

	// A verdict that names other bytes than the proven record is flagged, not shown as proven:
	// the page's fetch is wrapped to alter the service's answer, and the record opened again.
	within(t, ctx, "alter the answer", chromedp.Evaluate[bool](`(() => {
		const f = window.fetch;
		window.fetch = async (u, o) => {
			const r = await f(u, o);
			if (!String(u).startsWith("/v1/results/")) return r;
			const j = await r.json();
			j.record_sha256 = "00".repeat(32);
			return new Response(JSON.stringify(j), {status: 200, headers: {"Content-Type": "application/json"}});
		};
		return true;
	})()`))
	within(t, ctx, "open the record again", chromedp.Steps(
		chromedp.Click(chromedp.CSS(`#results tr[data-kind="attestation"] button.open`)),
		chromedp.WaitVisible(chromedp.CSS(`#proof-status.bad`)),
	))
	if proof := within(t, ctx, "altered proof", chromedp.Text(chromedp.ID("proof-status"))); !strings.Contains(proof, "names a record with SHA-256 0000000000000000…, not these bytes: do not rely on the verdict shown") {
		t.Errorf("altered answer: %q", proof)
	}
}

// startAuditorServe runs `proofline serve --test-mode` in-process over dataDir with one auditor token and
// returns its base URL; it stops when the test ends.
func startAuditorServe(t *testing.T, dataDir, tok string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(tok))
	cfgPath := writeConfig(t, fmt.Sprintf("data_dir: %s\nhttp:\n  listen: 127.0.0.1:0\n  tokens:\n    - {name: audrey, role: auditor, sha256: %s}\n", dataDir, hex.EncodeToString(sum[:])))
	cfg, err := loadServeConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, true, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { addrc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	return ""
}
