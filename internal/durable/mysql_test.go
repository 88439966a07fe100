package durable

import (
	"errors"
	"strings"
	"testing"
)

func TestServerSettingsCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    ServerSettings
		want string // a setting the error must name; "" for no error
	}{
		{"durable, no binary log", ServerSettings{FlushLogAtTrxCommit: 1, SyncBinlog: 0}, ""},
		{"durable, synced binary log", ServerSettings{FlushLogAtTrxCommit: 1, LogBin: true, SyncBinlog: 1}, ""},
		{"redo log flushed once a second", ServerSettings{FlushLogAtTrxCommit: 0}, "innodb_flush_log_at_trx_commit=0"},
		{"redo log written, not synced", ServerSettings{FlushLogAtTrxCommit: 2, LogBin: true, SyncBinlog: 1}, "innodb_flush_log_at_trx_commit=2"},
		{"binary log never synced", ServerSettings{FlushLogAtTrxCommit: 1, LogBin: true, SyncBinlog: 0}, "sync_binlog=0"},
		{"binary log synced every 100 commits", ServerSettings{FlushLogAtTrxCommit: 1, LogBin: true, SyncBinlog: 100}, "sync_binlog=100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check() = %v, want nil", err)
			case tc.want != "" && (!errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check() = %v, want ErrNotDurable naming %s", err, tc.want)
			}
		})
	}
}
