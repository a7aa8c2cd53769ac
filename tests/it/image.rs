//! The container image (issue 13): there is no Docker engine here, so the
//! Dockerfile is checked by reading it (user, entrypoint, CA roots, data
//! directory, paths it copies) and by running its build on exactly the files
//! it copies from the build context; and every image the manifests render is
//! rewritten to the registry set in `images:`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::schema::{config_arg, dockerfile_instructions, documents, kustomize};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile")
}

#[test]
fn the_final_image_runs_as_65532_with_ca_roots_and_a_data_dir() {
    let ins = dockerfile_instructions(&dockerfile());
    let last_from = ins.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    let fin = &ins[last_from..];
    assert_eq!(fin[0], "FROM scratch");
    assert!(fin.contains(&"USER 65532:65532".to_string()), "{fin:?}");
    assert!(
        fin.contains(&"ENTRYPOINT [\"/metrics-relay\"]".to_string()),
        "{fin:?}"
    );
    let copies: Vec<&String> = fin.iter().filter(|i| i.starts_with("COPY ")).collect();
    assert!(
        copies
            .iter()
            .any(|c| c.ends_with("/etc/ssl/certs/ca-certificates.crt")),
        "CA roots where the agent reads them: {copies:?}"
    );
    assert!(
        copies
            .iter()
            .any(|c| c.contains("--chown=65532:65532") && c.ends_with(" /var/lib/metrics-relay")),
        "the data directory, owned by the user: {copies:?}"
    );
    // The default command reads the config where the manifests mount it.
    let cmd = fin.iter().find(|i| i.starts_with("CMD ")).unwrap();
    let dep =
        documents(&std::fs::read_to_string(root().join("deploy/base/deployment.yaml")).unwrap());
    let arg = config_arg(&dep[0]["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        cmd.contains(&format!("\"{arg}\"")),
        "{cmd} vs the Deployment's --config={arg}"
    );
    // Multi-arch from one file.
    let text = dockerfile();
    assert!(text.contains("ARG TARGETARCH") && text.contains("aarch64-unknown-linux-musl"));
}

/// The build-context files the Dockerfile copies (`COPY SRC... DEST`
/// without `--from`), relative to the context.
fn context_copies(ins: &[String]) -> Vec<String> {
    ins.iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
        .flat_map(|i| {
            let words: Vec<&str> = i
                .split_whitespace()
                .skip(1)
                .filter(|w| !w.starts_with("--"))
                .collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// The Dockerfile's build, on only what it copies: a file the build needs and
/// the Dockerfile forgets fails here (as `render`'s embedded config did).
/// `cargo check` stands in for the release build (same sources, same
/// `--locked --bin metrics-relay`, minutes faster), offline, with a target
/// directory of its own.
#[test]
fn the_build_needs_only_what_the_dockerfile_copies() {
    let ins = dockerfile_instructions(&dockerfile());
    let build = ins
        .iter()
        .rfind(|i| i.starts_with("RUN ") && i.contains("cargo build"))
        .expect("a cargo build in the Dockerfile");
    assert!(
        build.contains("--release --locked") && build.contains("--bin metrics-relay"),
        "{build}"
    );
    let ctx = tempfile::tempdir().unwrap();
    let files = context_copies(&ins);
    for f in &files {
        copy_tree(&root().join(f), &ctx.path().join(f));
    }
    assert!(files.iter().any(|f| f == "Cargo.lock"), "{files:?}");
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "--locked",
            "--offline",
            "--quiet",
            "--bin",
            "metrics-relay",
        ])
        .current_dir(ctx.path())
        .env("CARGO_TARGET_DIR", root().join("target/dockerfile-check"))
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "the build fails on the files the Dockerfile copies ({files:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every container image the manifests render is rewritten by `images:`
/// (base and every overlay): none is left as the placeholder name.
#[test]
fn every_rendered_image_is_rewritten() {
    for dir in ["deploy", "deploy/overlays/daemonset"] {
        let text = kustomize(&root().join(dir));
        let mut seen = 0;
        for d in documents(&text) {
            for c in d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let image = c["image"].as_str().unwrap();
                assert!(
                    image.contains('/') && image.contains(':'),
                    "{dir}: image {image:?} not rewritten"
                );
                seen += 1;
            }
        }
        assert!(seen > 0, "{dir}: no workload");
    }
}
