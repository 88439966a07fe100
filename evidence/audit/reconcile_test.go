package audit

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence/audit/audittest"
	"github.com/proofline/proofline/verifier/ear"
)

func TestParseInventory(t *testing.T) {
	inv, err := ParseInventory([]byte("interval: 10m\ngrace: 1m\nsubjects:\n  - id: agent:a\n  - id: agent:b\n    interval: 1h\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Inventory{Interval: 10 * time.Minute, Grace: time.Minute, Statuses: []ear.Status{ear.StatusAffirming, ear.StatusWarning},
		Subjects: []InventorySubject{{ID: "agent:a"}, {ID: "agent:b", Interval: time.Hour}}}
	if !reflect.DeepEqual(inv, want) {
		t.Fatalf("got %+v", inv)
	}
	if _, err := ParseInventory([]byte(`{"interval": "5m", "subjects": [{"id": "agent:a"}]}`)); err != nil {
		t.Fatalf("JSON inventory: %v", err)
	}
	for _, c := range []struct{ name, in, want string }{
		{"unknown field", "interval: 1m\nsubject: []\n", "field subject not found"},
		{"no subjects", "interval: 1m\n", "no subjects"},
		{"no interval", "subjects: [{id: a}]\n", "no interval"},
		{"twice", "interval: 1m\nsubjects: [{id: a}, {id: a}]\n", "twice"},
		{"bad status", "interval: 1m\nstatuses: [fine]\nsubjects: [{id: a}]\n", "unknown status"},
		{"bad duration", "interval: often\nsubjects: [{id: a}]\n", "inventory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseInventory([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// Gaps are the periods longer than interval + grace without a verdict that counts, from the
// window's start to its end; verdicts that do not count and subjects not listed are reported.
func TestReconcile(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	minute := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	from, to := minute(0), minute(60)
	rep := &Report{Manifest: &Manifest{From: &from, To: &to}, Verdicts: []Verdict{
		{Subject: "a", Time: minute(5), Status: ear.StatusAffirming},
		{Subject: "a", Time: minute(15), Status: ear.StatusWarning},
		{Subject: "a", Time: minute(25), Status: ear.StatusContraindicated},
		{Subject: "a", Time: minute(35), Status: ear.StatusAffirming},
		{Subject: "a", Time: minute(45), Status: ear.StatusAffirming},
		{Subject: "a", Time: minute(55), Status: ear.StatusAffirming},
		{Subject: "stray", Time: minute(30), Status: ear.StatusAffirming},
	}}
	inv := &Inventory{Interval: 10 * time.Minute, Grace: time.Minute, Statuses: []ear.Status{ear.StatusAffirming, ear.StatusWarning},
		Subjects: []InventorySubject{{ID: "a"}, {ID: "b"}, {ID: "c", Interval: 2 * time.Hour}}}
	c := Reconcile(rep, inv)
	want := []SubjectCoverage{
		{ID: "a", Interval: 10 * time.Minute, Attested: 5, Other: 1, Last: minute(55), Gaps: []Gap{{minute(15), minute(35)}}, Missing: 20 * time.Minute},
		{ID: "b", Interval: 10 * time.Minute, Gaps: []Gap{{minute(0), minute(60)}}, Missing: time.Hour},
		{ID: "c", Interval: 2 * time.Hour, Gaps: []Gap{}},
	}
	if !reflect.DeepEqual(c.Subjects, want) || !reflect.DeepEqual(c.Unlisted, []string{"stray"}) || c.Gaps() != 2 {
		t.Fatalf("coverage %+v", c)
	}
}

// The fixture's VM that was offline for a few rounds shows one gap, from its last attestation
// before to its first after, in a bundle of that VM's records.
func TestReconcileFixture(t *testing.T) {
	l := fixture(t)
	from, to := l.RoundTime(offlineFrom-2), l.RoundTime(offlineTo+1)
	bundle, _ := export(t, l, ExportOptions{From: from, To: to, Subject: audittest.Subject(offlineVM)})
	rep := verify(t, bundle, VerifyOptions{})
	if !rep.OK() {
		t.Fatal(failures(rep))
	}
	inv := &Inventory{Interval: l.Step, Grace: l.Step, Statuses: []ear.Status{ear.StatusAffirming, ear.StatusWarning, ear.StatusContraindicated}}
	inv.Subjects = []InventorySubject{{ID: audittest.Subject(offlineVM)}, {ID: audittest.Subject(l.VMs[0])}}
	c := Reconcile(rep, inv)
	want := []Gap{{l.RoundTime(offlineFrom - 1), l.RoundTime(offlineTo)}}
	if s := c.Subjects[0]; !reflect.DeepEqual(s.Gaps, want) || s.Attested != 4 { // rounds 2, 3, 9 and 10
		t.Errorf("%s: %d attested, gaps %v; want the gap %v", s.ID, s.Attested, s.Gaps, want)
	}
	// The other VM's verdicts are not in a bundle for the offline one: all gap.
	if s := c.Subjects[1]; s.Attested != 0 || !reflect.DeepEqual(s.Gaps, []Gap{{from, to}}) {
		t.Errorf("%s: %+v", s.ID, s)
	}
}
