//! The command line as an operator uses it: model state, refusal of corrupt models, help.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

fn enclave(args: &[&str], data: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn models_list_shows_hashes_and_state_and_serve_refuses_a_corrupt_model() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, _) = enclave(&["models", "list"], data.path());
    assert!(ok);
    assert!(
        out.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{out}"
    );
    assert!(
        out.lines().filter(|l| l.contains("missing")).count() == 4,
        "{out}"
    );

    let dir = data.path().join("models/all-minilm-l6-v2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"not\": \"the pinned file\"}").unwrap();
    let (_, out, _) = enclave(&["models", "list"], data.path());
    let line = out.lines().find(|l| l.contains("config.json")).unwrap();
    assert!(line.contains("CORRUPT"), "{line}");

    let (ok, _, err) = enclave(
        &["serve", "--no-pull", "--listen", "127.0.0.1:0"],
        data.path(),
    );
    assert!(!ok);
    assert!(err.contains("missing or corrupt"), "{err}");
}

#[test]
fn a_verified_models_directory_lists_sizes() {
    let models = common::models_dir();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["models", "list", "--models-dir"])
        .arg(&models)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let gguf = out.lines().find(|l| l.contains(".gguf")).unwrap();
    assert!(
        gguf.contains("verified") && gguf.contains("98362432"),
        "{gguf}"
    );
}

#[test]
fn help_teaches() {
    let out = Command::new(common::bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "enclave serve",
        "ENCLAVE_LISTEN",
        "ENCLAVE_DATA_DIR",
        "models",
        "keys",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = Command::new(common::bin())
        .args(["keys", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("KEY=$(enclave keys create"), "{help}");
}

#[test]
fn label_commands_print_canonical_forms_and_relations() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, _) = enclave(
        &["label", "check", "(TS//SI//REL TO GBR, USA)"],
        data.path(),
    );
    assert!(ok);
    assert!(
        out.contains("banner:        TOP SECRET//SI//REL TO USA, GBR"),
        "{out}"
    );
    assert!(
        out.contains("portion:       (TS//SI//REL TO USA, GBR)"),
        "{out}"
    );
    let (ok, out, _) = enclave(&["label", "compare", "TS//SI", "S"], data.path());
    assert!(ok);
    assert!(out.contains("TOP SECRET//SI dominates SECRET"), "{out}");
    let (ok, _, err) = enclave(&["label", "check", "SECRET//BOGUS"], data.path());
    assert!(!ok);
    assert!(
        err.contains("at column 9") && err.contains("`BOGUS`"),
        "{err}"
    );
}

#[test]
fn config_check_explains_a_good_file_and_refuses_a_bad_one() {
    let data = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/enclave.toml");
    let out = Command::new(common::bin())
        .args(["config", "check", example, "--data-dir"])
        .arg(data.path())
        .env("PROVIDER_EU_KEY", "sk-test")
        .env("RACK_4_KEY", "sk-rack-4")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("weight 3, priority 0")
            && text.contains("anthropic http://10.20.0.9:9000/v1"),
        "{text}"
    );
    assert!(
        text.contains("quotas: tenant: 600 requests/min")
            && text.contains("each key: 60 requests/min")
            && !text.contains("sk-rack-4"),
        "{text}"
    );
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("provider-eu") && text.contains("accredited to UNCLASSIFIED//REL TO DEU"),
        "{text}"
    );
    // The data directory given on the command line counts for the file checked.
    assert!(
        text.contains(&format!("data dir: {}", data.path().display())),
        "{text}"
    );
    // The nation operating each deployment is shown on its own.
    let eu = text.lines().find(|l| l.contains("provider-eu")).unwrap();
    assert!(eu.contains("nation DEU"), "{eu}");
    assert!(
        text.contains("citizen-services") && text.contains("configuration OK"),
        "{text}"
    );
    assert!(
        !data.path().join("enclave.db").exists(),
        "checking must not create state"
    );

    let bad = data.path().join("bad.toml");
    let cases = [
        (
            "[[deployments]]\nname = \"x\"\nmodel = \"m\"\nbackend = \"openai\"\nbase_url = \"http://h/v1\"\naccreditation = \"SECRET//XX\"\njurisdiction = \"eu\"\nnation = \"DEU\"\n",
            "deployments[0] (`x`).accreditation",
        ),
        ("scheme = \"FR\"\n", "not a built-in scheme"),
        (
            "[[deployments]]\nname = \"x\"\nmodel = \"m\"\nbackend = \"openai\"\nbase_url = \"http://h/v1\"\naccreditation = \"UNCLASSIFIED\"\njurisdiction = \"eu\"\n",
            "needs `nation`",
        ),
        (
            "[[deployments]]\nname = \"x\"\nmodel = \"ft:smollm2-135m-instruct:default::abc\"\nbackend = \"openai\"\nbase_url = \"http://h/v1\"\naccreditation = \"UNCLASSIFIED\"\njurisdiction = \"eu\"\nnation = \"DEU\"\n",
            "served only inside the enclave",
        ),
        (
            "[tenants.a]\njurisdictions = []\nredact_pii_for = [\"eu\"]\n",
            "`redact_pii_for` names `eu`",
        ),
    ];
    for (toml, expect) in cases {
        std::fs::write(&bad, toml).unwrap();
        let (ok, _, err) = enclave(&["config", "check", bad.to_str().unwrap()], data.path());
        assert!(!ok, "accepted {toml}");
        assert!(err.contains(expect), "for {toml}: {err}");
    }
    let policy = data.path().join("p.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action, resource) when { principal.rolle == \"x\" };",
    )
    .unwrap();
    std::fs::write(&bad, format!("policy_file = \"{}\"\n", policy.display())).unwrap();
    let (ok, _, err) = enclave(&["config", "check", bad.to_str().unwrap()], data.path());
    assert!(!ok);
    assert!(
        err.contains("do not validate") && err.contains("rolle"),
        "{err}"
    );
}

#[test]
fn an_operator_defined_scheme_comes_from_the_configuration() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("fr.toml");
    std::fs::write(
        &file,
        r#"
[scheme]
name = "FR"
owner = "FRA"
levels = [
  { name = "NON PROTÉGÉ", portion = "NP" },
  { name = "DIFFUSION RESTREINTE", portion = "DR" },
  { name = "SECRET", portion = "S" },
  { name = "TRÈS SECRET", portion = "TS", aliases = ["TRES SECRET"] },
]
compartments = [{ name = "SPECIAL FRANCE", portion = "SF" }]
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(common::bin())
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .env("ENCLAVE_CONFIG", &file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&["label", "check", "(tres secret//SF)"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("banner:        TRÈS SECRET//SPECIAL FRANCE"),
        "{out}"
    );
    let (ok, out) = run(&["label", "compare", "DR", "NP"]);
    assert!(
        ok && out.contains("DIFFUSION RESTREINTE dominates NON PROTÉGÉ"),
        "{out}"
    );
    let (ok, out) = run(&["config", "check"]);
    assert!(
        ok && out.contains("marking scheme: FR (owner FRA)"),
        "{out}"
    );
}

#[test]
fn the_audit_key_is_made_once_and_rotates_keeping_the_old_one() {
    let data = tempfile::tempdir().unwrap();
    let (ok, k1, _) = enclave(&["audit", "public-key"], data.path());
    assert!(ok && k1.starts_with("enclave/audit+"), "{k1}");
    let (_, again, _) = enclave(&["audit", "public-key"], data.path());
    assert_eq!(k1, again, "the key is created once");
    let (ok, k2, err) = enclave(&["audit", "rotate-key"], data.path());
    assert!(ok, "{err}");
    assert!(k2.starts_with("enclave/audit+") && k2 != k1, "{k2}");
    assert!(err.contains(k1.trim()), "the retired key is named: {err}");
    let retired = std::fs::read_dir(data.path().join("audit"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("log.key.retired-")
        })
        .count();
    assert_eq!(retired, 1);
    let (_, now, _) = enclave(&["audit", "public-key"], data.path());
    assert_eq!(now, k2);
}
