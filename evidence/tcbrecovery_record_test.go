package evidence

import (
	"errors"
	"testing"
	"time"
)

// A TCB recovery in a collateral_update record (keys 4 and 5 of CollateralChange): the valid
// record round-trips byte for byte, and each rule breaks it from that valid case.
func TestCollateralChangeTCBRecovery(t *testing.T) {
	recovery := func() *Record {
		r := testRecords()[KindCollateralUpdate]
		r.CollateralUpdate[0].PreviousTCBEvaluationDataNumber = ptr(uint64(18))
		r.CollateralUpdate[0].TCBDate = ptr(t0.Add(-48 * time.Hour))
		return r
	}
	data, err := recovery().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	c := back.CollateralUpdate[0]
	if *c.PreviousTCBEvaluationDataNumber != 18 || *c.TCBEvaluationDataNumber != 19 || !c.TCBDate.Equal(t0.Add(-48*time.Hour)) || c.TCBDate.Location() != time.UTC {
		t.Fatalf("round trip: %+v", c)
	}
	for _, tc := range []struct {
		name   string
		mutate func(r *Record)
	}{
		{"previous number without a number", func(r *Record) { r.CollateralUpdate[0].TCBEvaluationDataNumber = nil }},
		{"previous number without a previous document", func(r *Record) { r.CollateralUpdate[0].Previous = nil }},
		{"tcb date without a number", func(r *Record) {
			r.CollateralUpdate[0].PreviousTCBEvaluationDataNumber = nil
			r.CollateralUpdate[0].TCBEvaluationDataNumber = nil
		}},
		{"sub-second tcb date", func(r *Record) { r.CollateralUpdate[0].TCBDate = ptr(t0.Add(time.Millisecond)) }},
		{"tcb date on a CRL", func(r *Record) { r.CollateralUpdate[1].TCBDate = ptr(t0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recovery()
			tc.mutate(r)
			if _, err := r.Marshal(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Marshal: got %v, want ErrMalformed", err)
			}
		})
	}
}
