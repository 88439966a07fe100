package api

import (
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// openAPIOperations reads openapi.yaml: "METHOD /path" → x-roles.
func openAPIOperations(t *testing.T) map[string][]string {
	t.Helper()
	var doc struct {
		OpenAPI string `yaml:"openapi"`
		Paths   map[string]map[string]struct {
			XRoles []string `yaml:"x-roles"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	ops := map[string][]string{}
	for path, methods := range doc.Paths {
		for m, op := range methods {
			if len(op.XRoles) == 0 {
				t.Errorf("%s %s has no x-roles", strings.ToUpper(m), path)
			}
			roles := slices.Clone(op.XRoles)
			sort.Strings(roles)
			ops[strings.ToUpper(m)+" "+path] = roles
		}
	}
	return ops
}

var echoParam = regexp.MustCompile(`:([a-z_]+)`)

// servedOperations lists the routes the server registers, in OpenAPI path syntax.
func servedOperations(t *testing.T, f *fixture) map[string][]string {
	t.Helper()
	byPath := map[string][]string{}
	for _, rt := range routes {
		var roles []string
		for _, r := range rt.roles {
			roles = append(roles, string(r))
		}
		sort.Strings(roles)
		byPath[rt.method+" "+rt.path] = roles
	}
	ops := map[string][]string{}
	for _, r := range f.echo().Routes() {
		key := r.Method + " " + r.Path
		roles, ok := byPath[key]
		if !ok {
			t.Errorf("echo serves %s, which is not in the route table", key)
			continue
		}
		ops[r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = roles
	}
	return ops
}

// The served routes are exactly openapi.yaml's operations, with the same roles.
func TestRoutesMatchOpenAPI(t *testing.T) {
	f := newFixture(t, options{})
	spec, served := openAPIOperations(t), servedOperations(t, f)
	for op, roles := range spec {
		got, ok := served[op]
		if !ok {
			t.Errorf("openapi.yaml lists %s, which the server does not serve", op)
		} else if !slices.Equal(got, roles) {
			t.Errorf("%s: openapi.yaml gives roles %v, the server %v", op, roles, got)
		}
	}
	for op := range served {
		if _, ok := spec[op]; !ok {
			t.Errorf("the server serves %s, which openapi.yaml does not list", op)
		}
	}
	// And it is what /v1/openapi.yaml serves.
	code, hdr, body := f.do(http.MethodGet, "/v1/openapi.yaml", "audrey", nil)
	if code != http.StatusOK || string(body) != string(OpenAPI) || !strings.HasPrefix(hdr.Get("Content-Type"), "application/yaml") {
		t.Fatalf("/v1/openapi.yaml: %d %s", code, hdr.Get("Content-Type"))
	}
}

// allowedStatus is what each route answers an allowed role's empty request in TestAuthorization
// (:id is the agent's own attestation result, :index 0 a record a checkpoint covers, :version 1
// the active policy, :digest a blob no record names).
var allowedStatus = map[string]int{
	"GET /metrics":                        http.StatusOK,
	"GET /v1/openapi.yaml":                http.StatusOK,
	"POST /v1/attest":                     http.StatusBadRequest, // an empty body is no envelope
	"GET /v1/results/:id":                 http.StatusOK,
	"GET /v1/log/checkpoint":              http.StatusOK,
	"GET /v1/log/proofs/inclusion/:index": http.StatusOK,
	"GET /v1/log/proofs/consistency":      http.StatusBadRequest, // from and to are required
	"POST /v1/events":                     http.StatusBadRequest, // an empty body is no event
	"GET /v1/policies":                    http.StatusOK,
	"POST /v1/policies":                   http.StatusBadRequest, // an empty body is no policy
	"GET /v1/policies/:version":           http.StatusOK,
	"POST /v1/policies/:version/activate": http.StatusConflict, // version 1 is already active
	"GET /v1/records":                     http.StatusOK,
	"GET /v1/records/:index":              http.StatusOK,
	"GET /v1/blobs/:digest":               http.StatusNotFound,
	"GET /v1/keys":                        http.StatusOK,
}

// Acceptance 5: every protected route answers 401 without a credential or with an unknown one,
// and 403 to every role it does not allow; allowed roles get past authorization and the
// operation's own answer to the (empty) request, allowedStatus. Public routes answer without
// credentials.
func TestAuthorization(t *testing.T) {
	f := newFixture(t, options{})
	byRole := map[service.Role]string{}
	for _, p := range principals {
		byRole[p.Role] = p.Name
	}
	agent := byRole[service.RoleAgent]
	own := f.attest(agent, f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone))
	waitProof(t, f, own.LogIndex)
	concrete := strings.NewReplacer(":id", own.ID, ":index", "0", ":version", "1", ":digest", strings.Repeat("00", 32))
	for _, rt := range routes {
		path := concrete.Replace(rt.path)
		name := rt.method + " " + rt.path
		t.Run(name, func(t *testing.T) {
			if slices.Contains(rt.roles, public) {
				code, _, body := f.do(rt.method, path, "", nil)
				if code == http.StatusUnauthorized || code == http.StatusForbidden {
					t.Fatalf("public route without credentials: %d %s", code, body)
				}
				return
			}
			code, hdr, body := f.do(rt.method, path, "", nil)
			if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("no credential: %d %s", code, body)
			}
			req, _ := http.NewRequest(rt.method, f.srv.URL+path, nil)
			req.Header.Set("Authorization", "Bearer not-a-token")
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("unknown token: %d", resp.StatusCode)
			}
			for _, role := range service.Roles {
				code, _, body := f.do(rt.method, path, byRole[role], nil)
				allowed := slices.Contains(rt.roles, role)
				switch {
				case !allowed && code != http.StatusForbidden:
					t.Errorf("%s: want 403, got %d %s", role, code, body)
				case allowed && code != allowedStatus[name]:
					t.Errorf("%s is allowed: want %d, got %d %s", role, allowedStatus[name], code, body)
				}
			}
		})
	}
	// An invalid credential on a public route is still refused: it never falls back to anonymous.
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/v1/challenge", nil)
	req.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("challenge with an unknown token: %d", resp.StatusCode)
	}
	// Routes outside the table are 404, JSON.
	if code, _, body := f.do(http.MethodGet, "/v1/nope", "alice", nil); code != http.StatusNotFound || !strings.Contains(string(body), "not_found") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
}

// Every $ref in openapi.yaml resolves, and every operation answers at least one 2xx.
func TestOpenAPIReferences(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	resolve := func(ref string) bool {
		var cur any = doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if cur, ok = m[part]; !ok {
				return false
			}
		}
		return true
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					if ref, _ := x.(string); !strings.HasPrefix(ref, "#/") || !resolve(ref) {
						t.Errorf("unresolved $ref %v", x)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	for path, methods := range doc["paths"].(map[string]any) {
		for m, op := range methods.(map[string]any) {
			ok := false
			for code := range op.(map[string]any)["responses"].(map[string]any) {
				ok = ok || strings.HasPrefix(code, "2")
			}
			if !ok {
				t.Errorf("%s %s has no 2xx response", m, path)
			}
		}
	}
}

// An agent sees only its own attestation results: another agent's is 404, as if it did not
// exist, while relying parties, admins and auditors read it.
func TestResultOwnership(t *testing.T) {
	f := newFixture(t, options{})
	a := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone))
	b := f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", f.challenge("vm-snp"), servicetest.FaultNone))
	for _, c := range []struct {
		as, id string
		want   int
	}{
		{"vm-tdx", a.ID, http.StatusOK},
		{"vm-snp", b.ID, http.StatusOK},
		{"vm-snp", a.ID, http.StatusNotFound},
		{"vm-tdx", b.ID, http.StatusNotFound},
		{"key-release", a.ID, http.StatusOK},
		{"alice", b.ID, http.StatusOK},
		{"audrey", a.ID, http.StatusOK},
	} {
		code, _, body := f.do(http.MethodGet, "/v1/results/"+c.id, c.as, nil)
		if code != c.want {
			t.Errorf("%s reads result %s: want %d, got %d %s", c.as, c.id, c.want, code, body)
		}
		if code == http.StatusNotFound && strings.Contains(string(body), "affirming") {
			t.Errorf("the 404 carries the result: %s", body)
		}
	}
}
