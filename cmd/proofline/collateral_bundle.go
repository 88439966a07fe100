package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/veraison/go-cose"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/service"
)

// `proofline collateral export` and `import` move the vendor collateral a connected verifier
// holds (its collateral cache) to an air-gapped one, as a bundle signed with the exporting data
// directory's record signing key (verifier/collateral/README.md, "Collateral bundles"). The
// air-gapped verifier serves the imported cache with `collateral: {offline: true}`.

// cacheDirOf is the collateral cache of a data directory, or the --cache-dir override.
func cacheDirOf(dataDir, cacheDir string) string {
	return service.CollateralCacheDir(service.Config{DataDir: dataDir, Collateral: service.CollateralConfig{CacheDir: cacheDir}})
}

// openCacheStore opens the collateral cache an export reads or an import writes: the one a fleet
// keeps in its state database (database, serve's `database:` DSN), or the cache directory
// (cacheDir, default DATA_DIR/collateral-cache), which an import creates (create) and an export
// requires. It returns the store, its name for messages, and how to close it.
func openCacheStore(ctx context.Context, dataDir, cacheDir, database string, create bool) (collateral.ListingStore, string, func(), error) {
	if database != "" {
		store, closeDB, err := openDatabaseStore(ctx, database)
		return store, "the state database", closeDB, err
	}
	dir := cacheDirOf(dataDir, cacheDir)
	if create {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, "", nil, err
		}
	} else if _, err := os.Stat(dir); err != nil {
		return nil, "", nil, fmt.Errorf("no collateral cache at %s (%w): the verifier fills it with collateral.fetch; give --cache-dir if it is elsewhere, or --database for a fleet's state database", dir, err)
	}
	store, err := collateral.OpenDirStore(dir)
	return store, dir, func() {}, err
}

// openDatabaseStore opens the collateral cache a fleet keeps in its state database (serve's
// `database:` DSN), and returns how to close it.
func openDatabaseStore(ctx context.Context, dsn string) (collateral.ListingStore, func(), error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("--database: %w", err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("--database: %w", err)
	}
	store, err := collateral.OpenSQLStoreMySQL(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("--database: %w", err)
	}
	return store, func() { db.Close() }, nil
}

func runCollateralExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return collateralExport(ctx, args, stderr, time.Now)
}

func collateralExport(ctx context.Context, args []string, stderr io.Writer, now func() time.Time) int {
	flags := flag.NewFlagSet("proofline collateral export", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dataDir := flags.String("data-dir", "", "the verifier's data directory (its keys/ sign the bundle); required")
	cacheDir := flags.String("cache-dir", "", "the collateral cache to export (collateral.cache_dir); default DATA_DIR/"+service.DefaultCollateralCacheDir)
	database := flags.String("database", "", "export the collateral cache in this state database instead (serve's database: DSN, MySQL/MariaDB)")
	out := flags.String("out", "", "the bundle file to write; required")
	name := flags.String("name", "", "the exporter's name in the bundle; default the host name")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline collateral export --data-dir DIR [--cache-dir DIR | --database DSN] [--name NAME] --out FILE")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline collateral export: "+format+"\n", a...)
		return code
	}
	if flags.NArg() > 0 {
		return fail(exitUsage, "unexpected argument %q", flags.Arg(0))
	}
	if *dataDir == "" || *out == "" {
		return fail(exitUsage, "--data-dir DIR and --out FILE are required")
	}
	if *name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fail(exitUsage, "the host name is unknown (%v); give --name", err)
		}
		*name = h
	}
	keysDir := filepath.Join(*dataDir, service.KeysDirName)
	key, err := evidence.LoadKey(filepath.Join(keysDir, evidence.KeyFileName))
	if err != nil {
		return fail(exitUsage, "%v (the bundle is signed with the data directory's record signing key: start proofline serve on it once)", err)
	}
	hist, err := evidence.LoadKeyHistory(filepath.Join(keysDir, service.KeyHistoryFileName))
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	t := now().UTC().Truncate(time.Second)
	if info, ok := hist.Lookup(key.KeyID()); !ok || !info.ValidAt(t) {
		return fail(exitUsage, "the signing key %x is not valid now in the key history %s: importers could not trust the bundle", key.KeyID(), filepath.Join(keysDir, service.KeyHistoryFileName))
	}
	if *database != "" && *cacheDir != "" {
		return fail(exitUsage, "give --cache-dir or --database, not both")
	}
	store, dir, closeStore, err := openCacheStore(ctx, *dataDir, *cacheDir, *database, false)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer closeStore()
	data, b, err := collateral.ExportBundle(ctx, store, collateral.ExportOptions{
		Signer: key, Name: *name, Software: "proofline/" + buildinfo.Version(), Now: t})
	if err != nil {
		return fail(1, "%v", err)
	}
	if len(b.Entries) == 0 {
		return fail(1, "the collateral cache %s holds no document: nothing to export", dir)
	}
	expired := 0
	for _, e := range b.Entries {
		r, err := collateral.Parse(e.Canonical)
		if err != nil {
			continue
		}
		if v, err := collateral.ValidityOf(r[0]); err == nil && !v.Fresh(t) {
			expired++
			fmt.Fprintf(stderr, "warning: %s expired at %s; importers refuse it\n", e.URL, v.NextUpdate.UTC().Format(time.RFC3339))
		}
	}
	if err := durable.Replace(*out, data, 0o644); err != nil {
		return fail(1, "%v", err)
	}
	fmt.Fprintf(stderr, "exported %d collateral documents (%d expired) from %s to %s, signed by key %x (exporter %q, %s)\n",
		len(b.Entries), expired, dir, *out, key.KeyID(), *name, b.ExportedAt.Format(time.RFC3339))
	return exitOK
}

func runCollateralImport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return collateralImport(ctx, args, stderr, time.Now)
}

func collateralImport(ctx context.Context, args []string, stderr io.Writer, now func() time.Time) int {
	flags := flag.NewFlagSet("proofline collateral import", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dataDir := flags.String("data-dir", "", "the data directory to import into; required")
	cacheDir := flags.String("cache-dir", "", "the collateral cache to import into (collateral.cache_dir); default DATA_DIR/"+service.DefaultCollateralCacheDir)
	database := flags.String("database", "", "import into the collateral cache in this state database instead (serve's database: DSN, MySQL/MariaDB)")
	trustedKey := flags.String("trusted-key", "", "the exporter's record key history (GET /v1/keys, or keys/history.json of its data directory) or a PEM public key; default the key history of --data-dir (a bundle this data directory exported)")
	atFlag := flags.String("at", "", "judge freshness at this time (RFC 3339) instead of now")
	rootsDir := flags.String("roots", "", "a directory of *.pem test vendor roots the documents must chain to, as serve's roots: (needs --test-mode); default the built-in Intel and AMD roots")
	testMode := flags.Bool("test-mode", false, "accept --roots: the data directory belongs to a verifier in test mode")
	grace := flags.Duration("stale-grace-unsafe", 0, "import documents up to this long past their nextUpdate (verdicts still report them stale unless the policy's stale_grace_unsafe accepts it)")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline collateral import --data-dir DIR [--cache-dir DIR | --database DSN] [--trusted-key FILE] [--test-mode --roots DIR] [--at RFC3339] [--stale-grace-unsafe DURATION] BUNDLE")
		flags.PrintDefaults()
	}
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline collateral import: "+format+"\n", a...)
		return code
	}
	if len(pos) != 1 || *dataDir == "" {
		return fail(exitUsage, "give --data-dir DIR and one bundle file")
	}
	if *grace < 0 {
		return fail(exitUsage, "--stale-grace-unsafe must not be negative")
	}
	at := now().UTC()
	if *atFlag != "" {
		if at, err = parseTimeFlag("at", *atFlag); err != nil {
			return fail(exitUsage, "%v", err)
		}
	}
	keyFile := *trustedKey
	if keyFile == "" {
		keyFile = filepath.Join(*dataDir, service.KeysDirName, service.KeyHistoryFileName)
		if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
			return fail(exitUsage, "give --trusted-key FILE: the exporter's key history (GET /v1/keys on the exporting verifier, or keys/history.json of its data directory); %s has no key history of its own", *dataDir)
		}
	}
	trusted, err := readTrustedKeys(keyFile)
	if err != nil {
		return fail(exitUsage, "--trusted-key: %v", err)
	}
	if *rootsDir != "" && !*testMode {
		return fail(exitUsage, "--roots %s replaces the vendor roots with test roots; give --test-mode too (for a test-mode verifier's data directory only: a production verifier would not use what they accept)", *rootsDir)
	}
	var rs *roots.Set
	if *rootsDir != "" {
		rs, err = roots.ReadDir(*rootsDir)
	} else {
		rs, err = roots.Builtin()
	}
	if err != nil {
		return fail(exitUsage, "--roots: %v", err)
	}
	data, err := durable.ReadLimited(pos[0], collateral.MaxBundleSize)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	b, err := collateral.OpenBundle(data, trusted)
	if err != nil {
		return fail(1, "%s: %v", pos[0], err)
	}
	fmt.Fprintf(stderr, "bundle %s: %d documents exported by %q (%s) at %s, signed by trusted key %x\n",
		pos[0], len(b.Entries), b.Exporter.Name, b.Exporter.Software, b.ExportedAt.Format(time.RFC3339), b.Exporter.KeyID)
	if *database != "" && *cacheDir != "" {
		return fail(exitUsage, "give --cache-dir or --database, not both")
	}
	store, dir, closeStore, err := openCacheStore(ctx, *dataDir, *cacheDir, *database, true)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer closeStore()
	rep, err := collateral.ImportBundle(ctx, b, store, collateral.ImportOptions{At: at, StaleGraceUnsafe: *grace,
		Authenticate: verifier.AuthenticCollateral(rs)})
	if rep != nil {
		for _, r := range rep.Results {
			switch r.Outcome {
			case collateral.Refused:
				fmt.Fprintf(stderr, "refused %s: %s\n", r.URL, r.Reason)
			case collateral.KeptNewer:
				fmt.Fprintf(stderr, "kept %s: %s\n", r.URL, r.Reason)
			}
		}
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	fmt.Fprintf(stderr, "%d imported, %d kept because the data directory's copy is newer or the same, %d refused (into %s)\n",
		rep.Imported, rep.Kept, rep.RefusedN, dir)
	if rep.Imported > 0 {
		fmt.Fprintf(stderr, "a running offline verifier on this data uses the imported documents within %s, each replacement a collateral_update record; one started later records them at its start\n",
			service.DefaultCollateralReloadInterval)
	}
	if rep.RefusedN > 0 {
		return 1
	}
	return exitOK
}

// readTrustedKeys reads the keys trusted to sign bundles: a record key history (the published
// JSON of evidence.KeyHistory, as keys/history.json), the response of GET /v1/keys (its
// record_keys), or a PEM "PUBLIC KEY" (ECDSA P-256: the record key's algorithm).
func readTrustedKeys(path string) ([]collateral.TrustedKey, error) {
	data, err := durable.ReadLimited(path, 1<<20)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if bytes.HasPrefix(data, []byte("-----BEGIN")) {
		block, rest := pem.Decode(data)
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%s: want one PEM \"PUBLIC KEY\" block", path)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return []collateral.TrustedKey{{Algorithm: cose.AlgorithmES256, Public: pub}}, nil
	}
	var keys struct {
		RecordKeys json.RawMessage `json:"record_keys"`
	}
	if json.Unmarshal(data, &keys) == nil && len(keys.RecordKeys) > 0 {
		data = keys.RecordKeys
	}
	var h evidence.KeyHistory
	if err := h.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%s: not a key history, a GET /v1/keys response or a PEM public key: %w", path, err)
	}
	var out []collateral.TrustedKey
	for _, k := range h.Keys() {
		out = append(out, collateral.TrustedKey{Algorithm: k.Algorithm, Public: k.Public, NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no key", path)
	}
	return out, nil
}
