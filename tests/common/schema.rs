//! A small OpenAPI v3 (Kubernetes CRD structural schema) validator, enough
//! to check our manifests against the Prometheus-Operator CRDs in
//! `tests/data/crds/`: unknown fields, types, enums, required fields.
#![allow(dead_code)]

use serde_json::Value;

/// Parses one YAML document into JSON values (via the `config` crate).
pub fn yaml(text: &str) -> Value {
    ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Yaml))
        .build()
        .expect("yaml")
        .try_deserialize()
        .expect("yaml value")
}

/// `kubectl kustomize DIR`: the rendered manifests (kubectl is required;
/// `scripts/test.sh` installs Debian's kubernetes-client where there is none).
pub fn kustomize(dir: &std::path::Path) -> String {
    let (program, args) = kustomize_command();
    let out = std::process::Command::new(&program)
        .args(&args)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {} {}: {}",
        program.display(),
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Oldest kustomize the shipped kustomizations build with (README).
pub const KUSTOMIZE_MIN_MAJOR: u32 = 5;

/// How to run kustomize: `$KUSTOMIZE` (scripts/test.sh sets it), else
/// `kustomize` on PATH, else `kubectl kustomize`; whichever it is must be
/// kustomize v5 or newer, or the test fails saying so.
pub fn kustomize_command() -> (std::path::PathBuf, Vec<String>) {
    let (program, args, version_args): (std::path::PathBuf, Vec<String>, Vec<&str>) = if let Some(
        k,
    ) =
        std::env::var_os("KUSTOMIZE")
    {
        (k.into(), vec!["build".into()], vec!["version"])
    } else if let Some(k) = super::on_path("kustomize") {
        (k, vec!["build".into()], vec!["version"])
    } else if let Some(k) = super::on_path("kubectl") {
        (k, vec!["kustomize".into()], vec!["version", "--client"])
    } else {
        panic!(
            "no kustomize (v{KUSTOMIZE_MIN_MAJOR}+) and no kubectl: scripts/test.sh installs kustomize from the Go module proxy, or set KUSTOMIZE"
        )
    };
    let out = std::process::Command::new(&program)
        .args(&version_args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    // "v5.8.2", or kubectl's "Kustomize Version: v5.5.0".
    let major = text
        .split(|c: char| c.is_whitespace() || c == '/')
        .filter_map(|w| w.strip_prefix('v'))
        .rfind(|w| w.contains('.'))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    match major {
        Some(m) if m >= KUSTOMIZE_MIN_MAJOR => (program, args),
        _ => panic!(
            "{} reports kustomize {:?}: the shipped kustomizations need kustomize v{KUSTOMIZE_MIN_MAJOR} or newer (kubectl 1.27+; Debian 12's kubectl 1.20 has v2.0.3, which cannot build them): scripts/test.sh installs one, or set KUSTOMIZE",
            program.display(),
            text.trim()
        ),
    }
}

/// The file a container's `--config=` argument names.
pub fn config_arg(container: &Value) -> String {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config="))
        .expect("a --config= argument")
        .to_string()
}

/// The documents of a multi-document YAML stream.
pub fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(yaml)
        .collect()
}

/// The `openAPIV3Schema` of a CRD file in `tests/data/crds/` (a missing
/// file fails the test).
pub fn crd_schema(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/crds")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd = yaml(&text);
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every violation of `schema` by `v`, with its path.
pub fn validate(v: &Value, s: &Value, path: &str, errs: &mut Vec<String>) {
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(format!("{path}: want int or string, got {v}"));
        }
        return;
    }
    if let Some(Value::Array(allowed)) = s.get("enum")
        && !allowed.contains(v)
    {
        errs.push(format!("{path}: {v} is not one of {allowed:?}"));
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(obj) = v.as_object() else {
                errs.push(format!("{path}: want object, got {v}"));
                return;
            };
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties");
            for (k, sub) in obj {
                let p = format!("{path}.{k}");
                match (props.and_then(|m| m.get(k)), extra) {
                    (Some(ps), _) => validate(sub, ps, &p, errs),
                    (None, Some(Value::Object(a))) => {
                        validate(sub, &Value::Object(a.clone()), &p, errs)
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if props.is_some() => errs.push(format!("{p}: unknown field")),
                    (None, _) => {}
                }
            }
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        errs.push(format!("{path}: missing required field {r}"));
                    }
                }
            }
        }
        Some("array") => match v.as_array() {
            Some(items) => {
                if let Some(is) = s.get("items") {
                    for (i, it) in items.iter().enumerate() {
                        validate(it, is, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            None => errs.push(format!("{path}: want array, got {v}")),
        },
        Some("string") if !v.is_string() => errs.push(format!("{path}: want string, got {v}")),
        Some("integer") if !(v.is_i64() || v.is_u64()) => {
            errs.push(format!("{path}: want integer, got {v}"))
        }
        Some("boolean") if !v.is_boolean() => errs.push(format!("{path}: want boolean, got {v}")),
        _ => {}
    }
}

/// The instructions of the Dockerfile, continuation lines joined.
pub fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// A Kubernetes quantity in bytes (`128Mi`, `1Gi`, `500M`, `1024`).
pub fn quantity(q: &serde_json::Value) -> u64 {
    let s = q
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| q.to_string());
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(u, m)| s.strip_suffix(u).map(|n| (n.to_string(), *m)))
    .unwrap_or((s.clone(), 1));
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {s:?}"))
        * mult
}
