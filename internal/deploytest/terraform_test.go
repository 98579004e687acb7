package deploytest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/labelsync/labelsync/internal/storages"
)

// The module and the example root that uses it.
const (
	tfModule  = "deploy/terraform"
	tfExample = "deploy/terraform/examples"
)

// tfDir is one Terraform module: its files and what they declare.
type tfDir struct {
	rel       string
	files     map[string]*hcl.File
	variables map[string]*hclsyntax.Block
	locals    map[string]*hclsyntax.Attribute
	resources map[string]*hclsyntax.Block // "type.name"
	data      map[string]*hclsyntax.Block // "type.name"
	outputs   map[string]*hclsyntax.Block
	modules   map[string]*hclsyntax.Block
	called    map[string]*tfDir // the modules that module blocks call, by block name
}

func loadTF(t *testing.T, rel string) *tfDir {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(path(t, rel), "*.tf"))
	if err != nil || len(names) == 0 {
		t.Fatalf("%s: no .tf files (%v)", rel, err)
	}
	d := &tfDir{rel: rel, files: map[string]*hcl.File{}, variables: map[string]*hclsyntax.Block{},
		locals: map[string]*hclsyntax.Attribute{}, resources: map[string]*hclsyntax.Block{}, data: map[string]*hclsyntax.Block{},
		outputs: map[string]*hclsyntax.Block{}, modules: map[string]*hclsyntax.Block{}}
	parser := hclparse.NewParser()
	for _, name := range names {
		f, diags := parser.ParseHCLFile(name)
		if diags.HasErrors() {
			t.Errorf("%s: %s", rel, diags.Error())
			continue
		}
		d.files[filepath.Base(name)] = f
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			declare := func(m map[string]*hclsyntax.Block, key string) {
				if _, dup := m[key]; dup {
					t.Errorf("%s/%s: %s %s declared twice", rel, filepath.Base(name), b.Type, key)
				}
				m[key] = b
			}
			switch b.Type {
			case "variable":
				declare(d.variables, b.Labels[0])
			case "output":
				declare(d.outputs, b.Labels[0])
			case "module":
				declare(d.modules, b.Labels[0])
			case "resource":
				declare(d.resources, b.Labels[0]+"."+b.Labels[1])
			case "data":
				declare(d.data, b.Labels[0]+"."+b.Labels[1])
			case "locals":
				for name, a := range b.Body.Attributes {
					if _, dup := d.locals[name]; dup {
						t.Errorf("%s: local %s declared twice", rel, name)
					}
					d.locals[name] = a
				}
			case "terraform", "provider":
			default:
				t.Errorf("%s/%s: unexpected top-level block %q", rel, filepath.Base(name), b.Type)
			}
		}
	}
	return d
}

// Every file is formatted as `terraform fmt` formats it.
func TestTerraformFormat(t *testing.T) {
	t.Parallel()
	for _, rel := range []string{tfModule, tfExample} {
		names, _ := filepath.Glob(filepath.Join(path(t, rel), "*.tf"))
		for _, name := range names {
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if got := hclwrite.Format(src); !bytes.Equal(got, src) {
				t.Errorf("%s/%s is not formatted: run terraform fmt -recursive deploy/terraform", rel, filepath.Base(name))
			}
		}
	}
	// Where a terraform binary exists, ask it too.
	if tf, err := exec.LookPath("terraform"); err == nil {
		cmd := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", path(t, tfModule))
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+os.DevNull)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("terraform fmt -check: %v\n%s", err, out)
		}
	}
}

// Every reference names something declared; every variable and output is
// documented; every variable is used.
func TestTerraformReferences(t *testing.T) {
	t.Parallel()
	module := loadTF(t, tfModule)
	example := loadTF(t, tfExample)
	example.called = map[string]*tfDir{}
	for name, b := range example.modules {
		src := attrString(t, b, "source")
		if rel := filepath.ToSlash(filepath.Clean(filepath.Join(example.rel, src))); rel != tfModule {
			t.Errorf("%s: module %s has source %q, want this repository's %s", example.rel, name, src, tfModule)
			continue
		}
		example.called[name] = module
	}
	for _, d := range []*tfDir{module, example} {
		used := map[string]bool{}
		for name, f := range d.files {
			for _, b := range f.Body.(*hclsyntax.Body).Blocks {
				for _, problem := range d.checkBlock(b, nil, used) {
					t.Errorf("%s/%s: %s", d.rel, name, problem)
				}
			}
		}
		for name, b := range d.variables {
			if s := attrString(t, b, "description"); len(s) < 20 {
				t.Errorf("%s: variable %s is not documented (description %q)", d.rel, name, s)
			}
			if b.Body.Attributes["type"] == nil {
				t.Errorf("%s: variable %s has no type", d.rel, name)
			}
			if !used[name] {
				t.Errorf("%s: variable %s is never used", d.rel, name)
			}
			for _, v := range b.Body.Blocks {
				if msg := attrString(t, v, "error_message"); msg == "" || !strings.HasSuffix(msg, ".") || strings.ToUpper(msg[:1]) != msg[:1] {
					t.Errorf("%s: variable %s: error_message %q must be a sentence ending in a period (Terraform requires it)", d.rel, name, msg)
				}
			}
		}
		for name, b := range d.outputs {
			if s := attrString(t, b, "description"); len(s) < 20 {
				t.Errorf("%s: output %s is not documented (description %q)", d.rel, name, s)
			}
		}
	}

	// The example passes every required variable of the module, and only
	// declared ones.
	m, ok := example.modules["labelsync"]
	if !ok {
		t.Fatalf("%s: no module \"labelsync\"", tfExample)
	}
	for arg := range m.Body.Attributes {
		if _, ok := module.variables[arg]; !ok && arg != "source" {
			t.Errorf("%s: module argument %s is not a variable of %s", tfExample, arg, tfModule)
		}
	}
	for name, v := range module.variables {
		if v.Body.Attributes["default"] == nil && m.Body.Attributes[name] == nil {
			t.Errorf("%s: the module's required variable %s is not set", tfExample, name)
		}
	}
}

// checkBlock reports the references of b (recursively) that name nothing
// declared; iterators are the dynamic blocks' iterators in scope. Variable
// uses go into used.
func (d *tfDir) checkBlock(b *hclsyntax.Block, iterators []string, used map[string]bool) []string {
	var problems []string
	if b.Type == "dynamic" {
		it := b.Labels[0]
		if a := b.Body.Attributes["iterator"]; a != nil {
			it = hcl.ExprAsKeyword(a.Expr)
		}
		iterators = append(slices.Clone(iterators), it)
	}
	for _, a := range sortedAttrs(b.Body) {
		if b.Type == "variable" && a.Name == "type" {
			continue // a type constraint, not references
		}
		for _, tr := range hclsyntax.Variables(a.Expr) {
			if p := d.checkTraversal(b, tr, iterators, used); p != "" {
				problems = append(problems, fmt.Sprintf("line %d: %s", tr.SourceRange().Start.Line, p))
			}
		}
	}
	for _, nested := range b.Body.Blocks {
		problems = append(problems, d.checkBlock(nested, iterators, used)...)
	}
	return problems
}

func (d *tfDir) checkTraversal(b *hclsyntax.Block, tr hcl.Traversal, iterators []string, used map[string]bool) string {
	root := tr.RootName()
	attr := func(i int) string {
		if i < len(tr) {
			if a, ok := tr[i].(hcl.TraverseAttr); ok {
				return a.Name
			}
		}
		return ""
	}
	name := tr.RootName() + "." + attr(1)
	switch {
	case slices.Contains(iterators, root):
		return ""
	case root == "var":
		if _, ok := d.variables[attr(1)]; !ok {
			return "undeclared " + name
		}
		used[attr(1)] = true
		if b.Type == "variable" && b.Labels[0] != attr(1) {
			return fmt.Sprintf("variable %s's validation refers to %s (Terraform before 1.9 refuses it)", b.Labels[0], name)
		}
	case root == "local":
		if _, ok := d.locals[attr(1)]; !ok {
			return "undeclared " + name
		}
	case root == "data":
		if _, ok := d.data[attr(1)+"."+attr(2)]; !ok {
			return "undeclared data." + attr(1) + "." + attr(2)
		}
	case root == "module":
		if _, ok := d.modules[attr(1)]; !ok {
			return "undeclared " + name
		}
		if called := d.called[attr(1)]; called != nil && attr(2) != "" {
			if _, ok := called.outputs[attr(2)]; !ok {
				return fmt.Sprintf("module.%s.%s: the module has no output %s", attr(1), attr(2), attr(2))
			}
		}
	case root == "path" || root == "terraform":
	case root == "count" || root == "each":
		// Fine where the resource has count / for_each: checked below.
		if !hasMeta(d, tr, root) {
			return root + " outside a resource with " + map[string]string{"count": "count", "each": "for_each"}[root]
		}
	default:
		if _, ok := d.resources[root+"."+attr(1)]; !ok {
			return "undeclared resource " + name
		}
	}
	return ""
}

// hasMeta reports whether the top-level block holding tr has count
// (for count.*) or for_each (for each.*).
func hasMeta(d *tfDir, tr hcl.Traversal, root string) bool {
	want := map[string]string{"count": "count", "each": "for_each"}[root]
	for _, f := range d.files {
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			if b.Range().Filename == tr.SourceRange().Filename && b.Range().ContainsOffset(tr.SourceRange().Start.Byte) {
				return b.Body.Attributes[want] != nil
			}
		}
	}
	return false
}

func sortedAttrs(body *hclsyntax.Body) []*hclsyntax.Attribute {
	var out []*hclsyntax.Attribute
	for _, a := range body.Attributes {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SrcRange.Start.Byte < out[j].SrcRange.Start.Byte })
	return out
}

// attrString is a literal string attribute of b, or "".
func attrString(t testing.TB, b *hclsyntax.Block, name string) string {
	t.Helper()
	a := b.Body.Attributes[name]
	if a == nil {
		return ""
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
		return ""
	}
	return v.AsString()
}

// tfFunctions are the Terraform functions the module's validations and
// outputs use, as Terraform defines them (cidrhost only as far as can()
// needs: it fails on what is not a CIDR range).
var tfFunctions = map[string]function.Function{
	"alltrue": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			for it := args[0].ElementIterator(); it.Next(); {
				if _, v := it.Element(); !v.True() {
					return cty.False, nil
				}
			}
			return cty.True, nil
		},
	}),
	"cidrhost": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "hostnum", Type: cty.Number}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			ip, _, err := net.ParseCIDR(args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(ip.String()), nil
		},
	}),
	"can":        tryfunc.CanFunc,
	"concat":     stdlib.ConcatFunc,
	"flatten":    stdlib.FlattenFunc,
	"jsonencode": stdlib.JSONEncodeFunc,
	"length":     stdlib.LengthFunc,
	"regex":      stdlib.RegexFunc,
	"trimsuffix": stdlib.TrimSuffixFunc,
}

// variableValue converts v to variable b's type, with its optional
// attributes' defaults, as Terraform does; cty.NilVal is its default.
func variableValue(t *testing.T, b *hclsyntax.Block, v cty.Value) (cty.Value, error) {
	t.Helper()
	ty, defaults, diags := typeexpr.TypeConstraintWithDefaults(b.Body.Attributes["type"].Expr)
	if diags.HasErrors() {
		t.Fatalf("variable %s type: %s", b.Labels[0], diags.Error())
	}
	if v == cty.NilVal {
		a := b.Body.Attributes["default"]
		if a == nil {
			t.Fatalf("variable %s has no default", b.Labels[0])
		}
		var diags hcl.Diagnostics
		if v, diags = a.Expr.Value(nil); diags.HasErrors() {
			t.Fatalf("variable %s default: %s", b.Labels[0], diags.Error())
		}
	}
	if defaults != nil {
		v = defaults.Apply(v)
	}
	return convert.Convert(v, ty)
}

// validate runs variable b's validations on v; it returns the error
// messages of those that fail.
func validate(t *testing.T, b *hclsyntax.Block, v cty.Value) []string {
	t.Helper()
	v, err := variableValue(t, b, v)
	if err != nil {
		return []string{"type: " + err.Error()}
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{b.Labels[0]: v})},
		Functions: tfFunctions,
	}
	var failed []string
	for _, vb := range b.Body.Blocks {
		ok, diags := vb.Body.Attributes["condition"].Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("variable %s: condition: %s", b.Labels[0], diags.Error())
		}
		if ok.False() {
			failed = append(failed, attrString(t, vb, "error_message"))
		}
	}
	return failed
}

func cidrs(n int, base string) cty.Value {
	var out []cty.Value
	for i := range n {
		out = append(out, cty.StringVal(fmt.Sprintf(base, i/256, i%256)))
	}
	if len(out) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	return cty.ListVal(out)
}

func networks(n, cidrsEach int) cty.Value {
	var out []cty.Value
	for i := range n {
		out = append(out, cty.ObjectVal(map[string]cty.Value{
			"network": cty.StringVal(fmt.Sprintf("projects/acme/global/networks/net-%d", i)),
			"cidrs":   cidrs(cidrsEach, "10.%d.%d.0/24"),
		}))
	}
	if len(out) == 0 {
		return cty.ListValEmpty(cty.Object(map[string]cty.Type{"network": cty.String, "cidrs": cty.List(cty.String)}))
	}
	return cty.ListVal(out)
}

// The variables' validations hold their defaults and refuse what GCS and
// Pub/Sub refuse: IP filtering's 200 ranges and 25 networks among them.
func TestTerraformValidations(t *testing.T) {
	t.Parallel()
	module := loadTF(t, tfModule)
	for name, b := range module.variables {
		if b.Body.Attributes["default"] != nil && len(b.Body.Blocks) > 0 {
			if failed := validate(t, b, cty.NilVal); len(failed) > 0 {
				t.Errorf("variable %s: its default fails its validation: %q", name, failed)
			}
		}
	}
	filter := func(public cty.Value, vpc cty.Value) cty.Value {
		attrs := map[string]cty.Value{}
		if public != cty.NilVal {
			attrs["public_cidrs"] = public
		}
		if vpc != cty.NilVal {
			attrs["vpc_networks"] = vpc
		}
		return cty.ObjectVal(attrs)
	}
	tests := []struct {
		variable string
		value    cty.Value
		valid    bool
	}{
		{"ip_filter", filter(cidrs(200, "203.%d.%d.0/24"), cty.NilVal), true},
		{"ip_filter", filter(cidrs(201, "203.%d.%d.0/24"), cty.NilVal), false},
		{"ip_filter", filter(cidrs(100, "203.%d.%d.0/24"), networks(25, 4)), true},
		{"ip_filter", filter(cidrs(101, "203.%d.%d.0/24"), networks(25, 4)), false}, // 201 ranges in all
		{"ip_filter", filter(cty.NilVal, networks(26, 1)), false},
		{"ip_filter", filter(cty.ListVal([]cty.Value{cty.StringVal("203.0.113.0/24"), cty.StringVal("2001:db8::/32")}), cty.NilVal), true},
		{"ip_filter", filter(cty.ListVal([]cty.Value{cty.StringVal("203.0.113.0")}), cty.NilVal), false},
		{"ip_filter", filter(cty.NilVal, cty.ListVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
			"network": cty.StringVal("my-vpc"), "cidrs": cty.ListVal([]cty.Value{cty.StringVal("10.0.0.0/8")})})})), false},
		{"ip_filter", cty.NullVal(cty.DynamicPseudoType), true},
		{"cors_origins", cty.ListVal([]cty.Value{cty.StringVal("https://label-studio.example.com"), cty.StringVal("*")}), true},
		{"cors_origins", cty.ListVal([]cty.Value{cty.StringVal("https://label-studio.example.com/")}), false},
		{"cors_origins", cty.ListVal([]cty.Value{cty.StringVal("label-studio.example.com")}), false},
		{"max_delivery_attempts", cty.NumberIntVal(4), false},
		{"max_delivery_attempts", cty.NumberIntVal(100), true},
		{"ack_deadline_seconds", cty.NumberIntVal(601), false},
		{"minimum_backoff", cty.StringVal("10"), false},
		{"name", cty.StringVal("labelsync-production-eu"), false}, // its service account ids would exceed 30 characters
	}
	for _, tt := range tests {
		b, ok := module.variables[tt.variable]
		if !ok {
			t.Fatalf("no variable %s", tt.variable)
		}
		if failed := validate(t, b, tt.value); (len(failed) == 0) != tt.valid {
			t.Errorf("variable %s = %s: failed validations %q, want valid %t", tt.variable, shortValue(tt.value), failed, tt.valid)
		}
	}
}

func shortValue(v cty.Value) string {
	s := fmt.Sprintf("%#v", v)
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// What the issue and Label Studio's GCS guide ask of the resources.
func TestTerraformResources(t *testing.T) {
	t.Parallel()
	module := loadTF(t, tfModule)
	want := []string{
		"google_pubsub_topic.uploads", "google_pubsub_topic_iam_member.gcs_publishes_uploads", "google_storage_notification.source",
		"google_pubsub_topic.dead_letter", "google_pubsub_subscription.dead_letter", "google_pubsub_subscription.worker",
		"google_service_account.worker", "google_service_account.exporter", "google_service_account_iam_member.worker_signs_urls",
		"google_storage_bucket.source", "google_storage_bucket.target", "google_storage_bucket_iam_member.exporter_writes_target",
	}
	for _, r := range want {
		if _, ok := module.resources[r]; !ok {
			t.Errorf("no resource %s", r)
		}
	}
	lit := func(r, attr string) string {
		t.Helper()
		b := module.resources[r]
		if b == nil || b.Body.Attributes[attr] == nil {
			return ""
		}
		v, diags := b.Body.Attributes[attr].Expr.Value(nil)
		if diags.HasErrors() {
			return ""
		}
		return v.GoString()
	}
	checks := []struct{ resource, attr, want string }{
		{"google_storage_notification.source", "payload_format", `cty.StringVal("JSON_API_V1")`},
		{"google_storage_notification.source", "event_types", `cty.TupleVal([]cty.Value{cty.StringVal("OBJECT_FINALIZE"), cty.StringVal("OBJECT_DELETE")})`},
		{"google_pubsub_topic_iam_member.gcs_publishes_uploads", "role", `cty.StringVal("roles/pubsub.publisher")`},
		{"google_service_account_iam_member.worker_signs_urls", "role", `cty.StringVal("roles/iam.serviceAccountTokenCreator")`},
		{"google_storage_bucket_iam_member.worker_reads_source", "role", `cty.StringVal("roles/storage.objectViewer")`},
		{"google_storage_bucket_iam_member.worker_gets_source", "role", `cty.StringVal("roles/storage.legacyBucketReader")`},
	}
	for _, c := range checks {
		if got := lit(c.resource, c.attr); got != c.want {
			t.Errorf("%s.%s = %s, want %s", c.resource, c.attr, got, c.want)
		}
	}
	sub := module.resources["google_pubsub_subscription.worker"]
	for _, attr := range []string{"ack_deadline_seconds", "message_retention_duration"} {
		if sub == nil || sub.Body.Attributes[attr] == nil {
			t.Errorf("google_pubsub_subscription.worker has no %s", attr)
		}
	}
	blocks := map[string]bool{}
	if sub != nil {
		for _, b := range sub.Body.Blocks {
			blocks[b.Type] = true
		}
	}
	for _, b := range []string{"dead_letter_policy", "retry_policy", "expiration_policy"} {
		if !blocks[b] {
			t.Errorf("google_pubsub_subscription.worker has no %s", b)
		}
	}
	// Label Studio's CORS policy on the source bucket.
	var cors *hclsyntax.Block
	if src := module.resources["google_storage_bucket.source"]; src != nil {
		for _, b := range src.Body.Blocks {
			if b.Type == "dynamic" && b.Labels[0] == "cors" {
				cors = b.Body.Blocks[0]
			}
		}
	}
	if cors == nil {
		t.Fatal("google_storage_bucket.source has no dynamic cors block")
	}
	for attr, want := range map[string]string{
		"method":          `cty.TupleVal([]cty.Value{cty.StringVal("GET")})`,
		"response_header": `cty.TupleVal([]cty.Value{cty.StringVal("Content-Type"), cty.StringVal("Access-Control-Allow-Origin")})`,
		"max_age_seconds": `cty.NumberIntVal(3600)`,
	} {
		v, diags := cors.Body.Attributes[attr].Expr.Value(nil)
		if diags.HasErrors() || v.GoString() != want {
			t.Errorf("source bucket CORS %s = %s, want %s (Label Studio's GCS guide)", attr, v.GoString(), want)
		}
	}
}

// The outputs are the worker's variables and a storages file it accepts.
func TestTerraformOutputs(t *testing.T) {
	t.Parallel()
	module := loadTF(t, tfModule)
	env, ok := module.outputs["worker_environment"]
	if !ok {
		t.Fatal("no output worker_environment")
	}
	obj, ok := env.Body.Attributes["value"].Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatal("output worker_environment is not an object of variables")
	}
	known := configVariables(t, "worker")
	var keys []string
	for _, item := range obj.Items {
		k, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("worker_environment key: %s", diags.Error())
		}
		keys = append(keys, k.AsString())
		if !known[k.AsString()] {
			t.Errorf("worker_environment: %s is not a worker variable", k.AsString())
		}
	}
	for _, required := range []string{"LABELSYNC_PUBSUB_PROJECT", "LABELSYNC_PUBSUB_SUBSCRIPTION"} {
		if !slices.Contains(keys, required) {
			t.Errorf("worker_environment has no %s", required)
		}
	}

	// storages_json, evaluated with the defaults and the example's values,
	// is a storages file the worker and the exporter accept.
	vars := map[string]cty.Value{}
	given := map[string]cty.Value{
		"project_id": cty.StringVal("acme"), "label_studio_project": cty.NumberIntVal(7),
		"source_bucket": cty.StringVal("acme-raw"), "source_prefix": cty.StringVal("incoming"),
		"target_bucket": cty.StringVal("acme-labels"), "target_prefix": cty.StringVal("annotations"),
		"regex_filter": cty.StringVal(`.*\.(jpe?g|png)$`),
	}
	for name, b := range module.variables {
		v := given[name]
		if v == cty.NilVal && b.Body.Attributes["default"] == nil {
			t.Fatalf("no test value for required variable %s", name)
		}
		var err error
		if vars[name], err = variableValue(t, b, v); err != nil {
			t.Fatalf("variable %s: %v", name, err)
		}
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)}, Functions: tfFunctions}
	out, ok := module.outputs["storages_json"]
	if !ok {
		t.Fatal("no output storages_json")
	}
	v, diags := out.Body.Attributes["value"].Expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("storages_json: %s", diags.Error())
	}
	f, err := storages.Parse([]byte(v.AsString()), storages.ParseOptions{})
	if err != nil {
		t.Fatalf("storages_json is not a storages file: %v\n%s", err, v.AsString())
	}
	if len(f.Import) != 1 || len(f.Export) != 1 || f.Import[0].Bucket != "acme-raw" || f.Export[0].Prefix == "" {
		t.Errorf("storages_json = %s, want one import storage on acme-raw and one export storage on acme-labels/annotations", v.AsString())
	}
}
