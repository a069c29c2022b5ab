//! `floatilla license` as a vendor and a customer run it: an authority, an issuing key, a
//! license, and the checks on it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::BIN;

fn license(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("license")
        .args(args)
        .env("FLOATILLA_LOG", "warn")
        .output()
        .expect("run floatilla license")
}

fn succeed(args: &[&str]) -> String {
    let output = license(args);
    assert!(
        output.status.success(),
        "floatilla license {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Fails with exit code 1; gives what it printed on stderr.
fn fail(args: &[&str]) -> String {
    let output = license(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "floatilla license {args:?} should have failed"
    );
    String::from_utf8(output.stderr).unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An authority and an issuer certified until 2099, in `dir`.
fn vendor(dir: &Path) {
    succeed(&["init-authority", "--out", path(&dir.join("authority"))]);
    succeed(&[
        "new-issuer",
        "--authority",
        path(&dir.join("authority")),
        "--valid-until",
        "2099-01-01T00:00:00Z",
        "--out",
        path(&dir.join("issuer")),
    ]);
}

fn issue_for(dir: &Path, installation: &str, seats: &str, out: &Path, extra: &[&str]) -> String {
    let issuer = dir.join("issuer");
    let mut args = vec![
        "issue",
        "--issuer",
        path(&issuer),
        "--installation-id",
        installation,
        "--customer",
        "Acme Wärme GmbH",
        "--seats",
        seats,
        "--out",
        path(out),
    ];
    args.extend_from_slice(extra);
    succeed(&args)
}

#[test]
fn a_vendor_issues_a_license_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    vendor(dir);
    for secret in ["authority/root.key", "issuer/issuer.key"] {
        assert_eq!(mode_of(&dir.join(secret)), 0o600, "{secret}");
    }
    let root_pub = std::fs::read_to_string(dir.join("authority/root.pub")).unwrap();
    assert!(root_pub.starts_with("-----BEGIN FLOATILLA LICENSE ROOT PUBLIC KEY-----\n"));

    let file = dir.join("plant-7.license");
    let printed = issue_for(
        dir,
        "plant-7",
        "250",
        &file,
        &[
            "--serial",
            "L-TEST-1",
            "--not-after",
            "2098-01-01T00:00:00Z",
            "--grace-until",
            "2098-02-01T00:00:00Z",
            "--supersedes",
            "L-OLD-1,L-OLD-2",
            "--entitlement",
            "reports",
            "--entitlement",
            "api",
        ],
    );
    assert!(printed.contains("L-TEST-1"), "{printed}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("-----BEGIN FLOATILLA LICENSE-----\n"));
    assert!(text.ends_with("-----END FLOATILLA LICENSE-----\n"));

    let shown = succeed(&["inspect", path(&file)]);
    assert!(shown.contains("not verified"), "{shown}");
    for expected in [
        "L-TEST-1",
        "plant-7",
        "Acme Wärme GmbH",
        "250",
        "2098-01-01T00:00:00Z",
        "2098-02-01T00:00:00Z",
        "L-OLD-1, L-OLD-2",
        "reports, api",
        "2099-01-01T00:00:00Z",
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }

    let root = dir.join("authority/root.pub");
    let verified = succeed(&[
        "verify",
        path(&file),
        "--trusted-root",
        path(&root),
        "--installation-id",
        "plant-7",
    ]);
    assert_eq!(verified.trim(), "valid");
    let verified = succeed(&["verify", path(&file), "--trusted-root", path(&root)]);
    assert_eq!(verified.trim(), "valid");
}

#[test]
fn verify_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    vendor(dir);
    let file = dir.join("plant-7.license");
    issue_for(dir, "plant-7", "unlimited", &file, &[]);
    let root = dir.join("authority/root.pub");

    let error = fail(&[
        "verify",
        path(&file),
        "--trusted-root",
        path(&root),
        "--installation-id",
        "plant-8",
    ]);
    assert!(error.contains("wrong_installation"), "{error}");

    let unrelated = dir.join("unrelated");
    succeed(&["init-authority", "--out", path(&unrelated)]);
    let error = fail(&[
        "verify",
        path(&file),
        "--trusted-root",
        path(&unrelated.join("root.pub")),
    ]);
    assert!(error.contains("unknown_issuer"), "{error}");
    // Trusting the unrelated root as well as the vendor's: the vendor's certifies the issuer.
    let verified = succeed(&[
        "verify",
        path(&file),
        "--trusted-root",
        path(&unrelated.join("root.pub")),
        "--trusted-root",
        path(&root),
    ]);
    assert_eq!(verified.trim(), "valid");

    let text = std::fs::read_to_string(&file).unwrap();
    let altered = dir.join("altered.license");
    std::fs::write(&altered, text.replacen("\n", "\n\n", 2)).unwrap();
    let error = fail(&["verify", path(&altered), "--trusted-root", path(&root)]);
    assert!(error.contains("malformed"), "{error}");
}

#[test]
fn nothing_is_overwritten_and_odd_terms_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    vendor(dir);
    let authority = dir.join("authority");
    let root_key = std::fs::read(authority.join("root.key")).unwrap();
    let error = fail(&["init-authority", "--out", path(&authority)]);
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(std::fs::read(authority.join("root.key")).unwrap(), root_key);
    let error = fail(&[
        "new-issuer",
        "--authority",
        path(&authority),
        "--valid-until",
        "2099-01-01T00:00:00Z",
        "--out",
        path(&dir.join("issuer")),
    ]);
    assert!(error.contains("already exists"), "{error}");
    let error = fail(&[
        "new-issuer",
        "--authority",
        path(&authority),
        "--valid-from",
        "2030-01-01T00:00:00Z",
        "--valid-until",
        "2029-01-01T00:00:00Z",
        "--out",
        path(&dir.join("backwards")),
    ]);
    assert!(error.contains("--valid-until"), "{error}");

    let file = dir.join("plant-7.license");
    issue_for(dir, "plant-7", "1", &file, &[]);
    let error = fail(&[
        "issue",
        "--issuer",
        path(&dir.join("issuer")),
        "--installation-id",
        "plant-7",
        "--customer",
        "Acme",
        "--seats",
        "1",
        "--out",
        path(&file),
    ]);
    assert!(error.contains("already exists"), "{error}");

    let odd_terms: [&[&str]; 3] = [
        &["--grace-until", "2098-01-01T00:00:00Z"],
        &[
            "--not-after",
            "2098-01-01T00:00:00Z",
            "--grace-until",
            "2097-01-01T00:00:00Z",
        ],
        &[
            "--not-before",
            "2098-01-01T00:00:00Z",
            "--not-after",
            "2098-01-01T00:00:00Z",
        ],
    ];
    let issuer = dir.join("issuer");
    let out = dir.join("odd.license");
    for extra in odd_terms {
        let mut args = vec![
            "issue",
            "--issuer",
            path(&issuer),
            "--installation-id",
            "plant-7",
            "--customer",
            "Acme",
            "--seats",
            "1",
            "--out",
            path(&out),
        ];
        args.extend_from_slice(extra);
        let error = fail(&args);
        assert!(error.contains("refusing to issue"), "{extra:?}: {error}");
        assert!(!out.exists());
    }
}

/// Runs `floatilla admin --data-dir DIR ARGS`; answers its output, trimmed.
fn admin(data_dir: &Path, args: &[&str]) -> String {
    common::admin(data_dir, args)
        .unwrap_or_else(|e| panic!("admin {args:?} failed: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn a_customer_installs_a_license_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    vendor(dir.path());
    let data = dir.path().join("data");
    let root = dir.path().join("authority/root.pub");
    let served = common::serve(
        &[
            "--data-dir",
            path(&data),
            "--listen",
            "127.0.0.1:0",
            "--trusted-root",
            path(&root),
        ],
        &[],
    );
    let installation = admin(&data, &["installation-id"]);
    let token = admin(&data, &["create-token", "--role", "admin"]);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, admin(&data, &["ca-certificate"]) + "\n").unwrap();
    let file = dir.path().join("site.lic");
    succeed(&[
        "issue",
        "--issuer",
        path(&dir.path().join("issuer")),
        "--installation-id",
        &installation,
        "--customer",
        "Harbour Works",
        "--seats",
        "25",
        "--serial",
        "L-SITE-1",
        "--out",
        path(&file),
    ]);
    let install = |file: &Path| {
        license(&[
            "install",
            path(file),
            "--server",
            &served.url,
            "--token",
            &token,
            "--ca-cert",
            path(&ca),
        ])
    };
    let installed = install(&file);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let said = String::from_utf8(installed.stdout).unwrap();
    assert!(
        said.contains("installed L-SITE-1 for Harbour Works: 25 seats, valid"),
        "{said}"
    );
    // Installing it again is refused, with the server's code.
    let again = install(&file);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("conflict"));
    // A license for another installation is refused by the server too.
    let other = dir.path().join("other.lic");
    succeed(&[
        "issue",
        "--issuer",
        path(&dir.path().join("issuer")),
        "--installation-id",
        "somewhere-else",
        "--customer",
        "Harbour Works",
        "--seats",
        "5",
        "--out",
        path(&other),
    ]);
    let refused = install(&other);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("wrong_installation"));
}
