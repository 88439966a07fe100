package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
)

// The auditor UI's script, in headless Chromium, against a fake of the API routes it reads
// (uiAPI), whose answers a test alters one at a time. cmd/proofline's TestAuditorBrowser runs the
// UI against a real `proofline serve`.

// uiChromium is Debian's chromium, which .ci/run installs.
const uiChromium = "/usr/bin/chromium"

// uiAPI is a fake of the routes the UI reads: a log of three records — attestations 0 (vm-good,
// affirming) and 1 (vm-bad, contraindicated), a policy change 2 — with RFC 6962 inclusion proofs
// under one checkpoint of three records (its signature line is junk: the page does not check it),
// the rows GET /v1/records lists, and the service's answers. A test changes rows or answers
// before it opens the page.
type uiAPI struct {
	leaves  [][]byte
	proofs  [][][]byte
	cp      string
	rows    []map[string]any
	answers map[int]map[string]any
	// hold[i], when set, holds GET /v1/results/{i} until it is closed; arrived[i] and served[i]
	// are closed when that request arrives and once its answer was written.
	hold, arrived, served map[int]chan struct{}
	// records answers GET /v1/records; by default the rows, with "next" when rows are more than 2.
	records func(q string) map[string]any

	mu      sync.Mutex
	queries []string // of GET /v1/records, as sent
}

func newUIAPI(t *testing.T) *uiAPI {
	t.Helper()
	a := &uiAPI{
		leaves:  [][]byte{[]byte("record 0: vm-good"), []byte("record 1: vm-bad"), []byte("record 2: policy change")},
		answers: map[int]map[string]any{},
		hold:    map[int]chan struct{}{},
		arrived: map[int]chan struct{}{},
		served:  map[int]chan struct{}{},
	}
	tree := testonly.New(rfc6962.DefaultHasher)
	tree.AppendData(a.leaves...)
	for i := range a.leaves {
		p, err := tree.InclusionProof(uint64(i), tree.Size())
		if err != nil {
			t.Fatal(err)
		}
		a.proofs = append(a.proofs, p)
	}
	a.cp = "example.com/proofline-test\n" + strconv.FormatUint(tree.Size(), 10) + "\n" + base64.StdEncoding.EncodeToString(tree.Hash()) + "\n\n— nobody AAAAAAAA\n"
	policy := map[string]string{"id": "p", "digest": "sha256:00"}
	a.rows = []map[string]any{
		{"log_index": 0, "record_sha256": a.digest(0), "kind": "attestation", "time": "2026-12-01T00:00:00Z", "subject": "agent:vm-good", "platform": "tdx", "status": "affirming"},
		{"log_index": 1, "record_sha256": a.digest(1), "kind": "attestation", "time": "2026-12-01T00:00:01Z", "subject": "agent:vm-bad", "platform": "sev-snp", "status": "contraindicated"},
		{"log_index": 2, "record_sha256": a.digest(2), "kind": "policy_change", "time": "2026-12-01T00:00:02Z", "policy": "p"},
	}
	a.answers[0] = map[string]any{"id": "0", "log_index": 0, "record_sha256": a.digest(0), "result": map[string]any{
		"status": "affirming", "verified_at": "2026-12-01T00:00:00Z", "policy": policy, "claims": map[string]string{"who": "vm-good"}}}
	a.answers[1] = map[string]any{"id": "1", "log_index": 1, "record_sha256": a.digest(1), "result": map[string]any{
		"status": "contraindicated", "verified_at": "2026-12-01T00:00:01Z", "policy": policy, "claims": map[string]string{"who": "vm-bad"},
		"failures": []map[string]string{{"code": "snp_debug", "check": "policy", "message": "debug is on"}}}}
	a.records = func(string) map[string]any { return map[string]any{"records": a.rows} }
	return a
}

// digest is the SHA-256 of leaf i in hex, as the API names records.
func (a *uiAPI) digest(i int) string {
	s := sha256.Sum256(a.leaves[i])
	return hex.EncodeToString(s[:])
}

func (a *uiAPI) recordQueries() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.queries...)
}

func (a *uiAPI) handler() http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	index := func(w http.ResponseWriter, r *http.Request) (int, bool) {
		i, err := strconv.Atoi(r.PathValue("i"))
		if err != nil || i < 0 || i >= len(a.leaves) {
			http.NotFound(w, r)
			return 0, false
		}
		return i, true
	}
	mux.HandleFunc("GET /ui/{file...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "" {
			name = "index.html"
		}
		f, ok := uiFiles[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", uiCSP)
		w.Header().Set("Content-Type", f.contentType)
		w.Write(f.body)
	})
	mux.HandleFunc("GET /v1/records", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.queries = append(a.queries, r.URL.RawQuery)
		a.mu.Unlock()
		writeJSON(w, a.records(r.URL.RawQuery))
	})
	mux.HandleFunc("GET /v1/audit/summary", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"records": 0})
	})
	mux.HandleFunc("GET /v1/results/{i}", func(w http.ResponseWriter, r *http.Request) {
		i, ok := index(w, r)
		if !ok || a.answers[i] == nil {
			http.NotFound(w, r)
			return
		}
		if c := a.arrived[i]; c != nil {
			close(c)
		}
		if h := a.hold[i]; h != nil {
			select {
			case <-h:
			case <-r.Context().Done():
				return
			}
		}
		writeJSON(w, a.answers[i])
		if s := a.served[i]; s != nil {
			close(s)
		}
	})
	mux.HandleFunc("GET /v1/log/proofs/inclusion/{i}", func(w http.ResponseWriter, r *http.Request) {
		if i, ok := index(w, r); ok {
			writeJSON(w, map[string]any{"log_index": i, "tree_size": len(a.leaves), "hashes": a.proofs[i], "checkpoint": a.cp})
		}
	})
	mux.HandleFunc("GET /v1/records/{i}", func(w http.ResponseWriter, r *http.Request) {
		if i, ok := index(w, r); ok {
			w.Header().Set("Content-Type", `application/cose; cose-type="cose-sign1"`)
			w.Write(a.leaves[i])
		}
	})
	return mux
}

// openUI serves a over HTTP, opens the UI in a new headless Chromium, signs in and waits for the
// rows of the first search.
func openUI(t *testing.T, a *uiAPI) context.Context {
	t.Helper()
	ctx, base := newUITab(t, a)
	inTab(t, ctx, "sign in", chromedp.Steps(
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("token"), "any-token"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#results tr[data-index="0"] button.open`)),
	))
	return ctx
}

// newUITab serves a over HTTP and starts a headless Chromium with a fresh profile; it returns
// the tab and the server's URL. It skips the test when Chromium is not installed, except under
// CI=true, where that is a failure.
func newUITab(t *testing.T, a *uiAPI) (context.Context, string) {
	t.Helper()
	if _, err := os.Stat(uiChromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (%v): .ci/run installs Debian's chromium package", uiChromium, err)
		}
		t.Skipf("skipping the browser test: %s is missing (apt-get install chromium, as .ci/run does)", uiChromium)
	}
	srv := httptest.NewServer(a.handler())
	t.Cleanup(srv.Close)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(uiChromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { // before the profile directory is removed and the server closed
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser and the tab, for the life of the test
		t.Fatalf("starting %s: %v", uiChromium, err)
	}
	return ctx, srv.URL
}

// inTab runs an action in the tab with a deadline: a guard against a hung browser, never a
// timed assertion.
func inTab[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitClosed waits for c to be closed, with a deadline against a hung browser.
func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not in 30s", what)
	}
}

// recordPanel is what the record panel shows.
type recordPanel struct {
	Index, Facts, Verdict, Failures, Claims, ProofStatus, ProofClass, Error string
}

func readRecordPanel(t *testing.T, ctx context.Context) recordPanel {
	t.Helper()
	return inTab(t, ctx, "read the record panel", chromedp.Evaluate[recordPanel](`(() => {
		const text = (id) => document.getElementById(id).textContent;
		return {Index: text("record-index"), Facts: text("record-facts"), Verdict: text("record-verdict"), Failures: text("record-failures"),
			Claims: text("record-claims"), ProofStatus: text("proof-status"), ProofClass: document.getElementById("proof-status").className,
			Error: text("record-error")};
	})()`))
}

// openRecordPanel opens record i and waits until its panel shows the proof's status.
func openRecordPanel(t *testing.T, ctx context.Context, i int) recordPanel {
	t.Helper()
	n := strconv.Itoa(i)
	inTab(t, ctx, "open record "+n, chromedp.Steps(
		chromedp.Click(chromedp.CSS(`#results tr[data-index="`+n+`"] button.open`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("record-index").textContent === "`+n+`" && document.getElementById("proof-status").className !== ""`),
	))
	return readRecordPanel(t, ctx)
}

// Opening record 0 and then record 1 while record 0's answer is still on its way shows record 1
// only: the late answer for record 0 is dropped, never written under record 1's heading.
func TestUIRecordLateAnswer(t *testing.T) {
	a := newUIAPI(t)
	hold, arrived, served := make(chan struct{}), make(chan struct{}), make(chan struct{})
	a.hold[0], a.arrived[0], a.served[0] = hold, arrived, served
	released := false
	t.Cleanup(func() {
		if !released {
			close(hold)
		}
	})
	ctx := openUI(t, a)
	inTab(t, ctx, "open record 0", chromedp.Click(chromedp.CSS(`#results tr[data-index="0"] button.open`)))
	waitClosed(t, arrived, "record 0's request")
	first := openRecordPanel(t, ctx, 1)
	close(hold)
	released = true
	waitClosed(t, served, "record 0's answer")
	// Record 0's answer (and, were it kept, its proof) would show within moments: wait for that
	// to happen, which it must not.
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`(() => {
		const text = (id) => document.getElementById(id).textContent;
		return text("record-index") !== "1" || text("record-verdict").startsWith("affirming") || text("record-claims").includes("vm-good") ||
			text("proof-status").includes("index 0 ");
	})()`, chromedp.WithPollingTimeout(2*time.Second)))
	if err == nil {
		t.Errorf("record 0's late answer was written into record 1's panel: %+v", readRecordPanel(t, ctx))
	} else if !errors.Is(err, chromedp.ErrPollingTimeout) {
		t.Fatal(err)
	}
	for _, p := range []recordPanel{first, readRecordPanel(t, ctx)} {
		if p.Index != "1" || !strings.HasPrefix(p.Verdict, "contraindicated") || !strings.Contains(p.Failures, "snp_debug") ||
			!strings.Contains(p.Claims, "vm-bad") || strings.Contains(p.Claims, "vm-good") || !strings.Contains(p.Facts, "agent:vm-bad") ||
			!strings.Contains(p.ProofStatus, "index 1 ") || strings.Contains(p.ProofStatus, "index 0 ") || p.ProofClass == "bad" {
			t.Errorf("record 1's panel: %+v", p)
		}
	}
}

// The proven bytes must be the record the index lists: a record whose bytes have another SHA-256
// than its row names is flagged, for an attestation (whose answer names the served bytes) and
// for any other record alike.
func TestUIProofDigestMismatch(t *testing.T) {
	a := newUIAPI(t)
	other := strings.Repeat("ab", 32)
	a.rows[1]["record_sha256"] = other
	a.rows[2]["record_sha256"] = other
	ctx := openUI(t, a)
	for _, i := range []int{1, 2} {
		p := openRecordPanel(t, ctx, i)
		want := "The record bytes served for index " + strconv.Itoa(i) + " have the SHA-256 " + a.digest(i)[:16] + "…, but the records list names " + other[:16] + "… for it"
		if p.ProofClass != "bad" || !strings.Contains(p.ProofStatus, want) {
			t.Errorf("record %d, listed with another SHA-256: %+v", i, p)
		}
	}
	if p := openRecordPanel(t, ctx, 0); p.ProofClass == "bad" {
		t.Errorf("record 0, as listed: %+v", p)
	}
}

// A proof that leads to the root of the checkpoint the server sent, unsigned as far as the page
// knows, is worded as consistent with that checkpoint — not as verified, and not in green — and
// points to `proofline audit verify` for independent proof.
func TestUIProofWording(t *testing.T) {
	ctx := openUI(t, newUIAPI(t))
	for _, i := range []int{0, 2} {
		p := openRecordPanel(t, ctx, i)
		if p.ProofClass != "consistent" || !strings.HasPrefix(p.ProofStatus, "Consistent with the checkpoint this server sent: ") ||
			!strings.Contains(p.ProofStatus, "for independent proof, run proofline audit verify on an export") ||
			strings.Contains(strings.ToLower(p.ProofStatus), "verified") || strings.Contains(p.ProofStatus, "proves") {
			t.Errorf("record %d: %+v", i, p)
		}
		if named := strings.Contains(p.ProofStatus, "The answer names these same bytes by their SHA-256."); named != (i == 0) {
			t.Errorf("record %d: the answer's digest is (not) mentioned: %q", i, p.ProofStatus)
		}
	}
	colour := inTab(t, ctx, "proof status colour", chromedp.Evaluate[string](`getComputedStyle(document.getElementById("proof-status")).color`))
	body := inTab(t, ctx, "text colour", chromedp.Evaluate[string](`getComputedStyle(document.body).color`))
	if colour != body {
		t.Errorf("the proof status is drawn in %s, not in the text's colour %s", colour, body)
	}
}

// "More" asks the next page of the last search, whatever the form's fields hold since: never the
// form's new fields from the last search's position.
func TestUIMoreKeepsQuery(t *testing.T) {
	a := newUIAPI(t)
	a.records = func(q string) map[string]any {
		if v, _ := url.ParseQuery(q); v.Get("start") == "" {
			return map[string]any{"records": a.rows[:2], "next": 2}
		}
		return map[string]any{"records": a.rows[2:]}
	}
	ctx := openUI(t, a)
	more := func(edit string) string {
		inTab(t, ctx, "edit the form, then More", chromedp.Steps(
			chromedp.SetValue(chromedp.ID("q-subject"), edit),
			chromedp.SetValue(chromedp.ID("q-kind"), "policy_change"),
			chromedp.Click(chromedp.ID("more")),
			chromedp.WaitVisible(chromedp.CSS(`#results tr[data-index="2"]`)),
		))
		q := a.recordQueries()
		return q[len(q)-1]
	}
	if q := more("agent:vm-bad"); q != "limit=50&start=2" {
		t.Errorf("More after the first search asked %q", q)
	}
	inTab(t, ctx, "search a subject", chromedp.Steps(
		chromedp.SetValue(chromedp.ID("q-subject"), "agent:vm-good"),
		chromedp.SetValue(chromedp.ID("q-kind"), "attestation"),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#results[data-query^="subject=agent%3Avm-good"] tr[data-index="0"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#results tr[data-index="2"]`)),
	))
	if q := more("agent:vm-bad"); q != "subject=agent%3Avm-good&kind=attestation&limit=50&start=2" {
		t.Errorf("More after a search of agent:vm-good asked %q", q)
	}
	if n := len(inTab(t, ctx, "rows", chromedp.Nodes(chromedp.CSSAll(`#results tr`), chromedp.AtLeast(0)))); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
}

// The token field is a text field masked by CSS, not a password field, so that browsers do not
// offer to save the API token; it is not autocompleted or spell-checked.
func TestUITokenField(t *testing.T) {
	ctx, base := newUITab(t, newUIAPI(t))
	inTab(t, ctx, "open the UI", chromedp.Steps(
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "secret-token"),
	))
	got := inTab(t, ctx, "the token field", chromedp.Evaluate[string](`(() => {
		const f = document.getElementById("token"), form = document.getElementById("login-form");
		return [f.type, f.autocomplete, form.autocomplete, f.spellcheck, f.getAttribute("autocapitalize"), getComputedStyle(f).webkitTextSecurity, f.value].join(",");
	})()`))
	if got != "text,off,off,false,off,disc,secret-token" {
		t.Errorf("token field (type, autocomplete, form's autocomplete, spellcheck, autocapitalize, masking, value): %s", got)
	}
}
