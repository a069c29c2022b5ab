//! `floatilla license`: the vendor's side of signed license files (a root authority, issuing
//! keys, issuing licenses) and the checks anyone can run on a license file.
//!
//! Keys are files in directories: `root.key` and `root.pub` for the authority, `issuer.key` and
//! `issuer.cert` for an issuing key. Secret keys are written readable by their owner only, and
//! no command overwrites a file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use clap::{Args, Subcommand};
use floatilla_agent::ServerTrust;
use floatilla_domain::licensing::{
    IssuerKey, LicenseClaims, RootKey, RootPublicKey, Seats, SignedIssuerCertificate, inspect,
    issue, verify,
};
use floatilla_domain::{Clock, SystemClock, Timestamp};
use rand::Rng;

const ROOT_KEY_FILE: &str = "root.key";
const ROOT_PUBLIC_KEY_FILE: &str = "root.pub";
const ISSUER_KEY_FILE: &str = "issuer.key";
const ISSUER_CERTIFICATE_FILE: &str = "issuer.cert";

#[derive(Debug, Args)]
pub struct LicenseCommand {
    #[command(subcommand)]
    action: LicenseAction,
}

#[derive(Debug, Subcommand)]
enum LicenseAction {
    /// Create the root authority: DIR/root.key (keep it offline) and DIR/root.pub (what
    /// installations trust).
    InitAuthority {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create an issuing key certified by the root: DIR/issuer.key and DIR/issuer.cert.
    NewIssuer {
        /// The directory holding root.key.
        #[arg(long, value_name = "DIR")]
        authority: PathBuf,
        /// The first instant it may issue licenses (RFC 3339) [default: now].
        #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
        valid_from: Option<Timestamp>,
        /// The last instant it may issue licenses (RFC 3339); its licenses stay valid after.
        #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
        valid_until: Timestamp,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a license for one installation.
    Issue(IssueArgs),
    /// Show what a license file claims, without checking it.
    Inspect {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Install a license file on a running server, through its API: the pool changes at once.
    Install {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The server as `serve` prints it: https://HOST:PORT.
        #[arg(long, env = "FLOATILLA_SERVER")]
        server: String,
        /// An admin API token (`floatilla admin create-token --role admin`).
        #[arg(long, env = "FLOATILLA_TOKEN")]
        token: String,
        /// The server's CA certificate (`floatilla admin ca-certificate`).
        #[arg(long, value_name = "FILE")]
        ca_cert: PathBuf,
        /// Proceed although routers licensed now would become excess.
        #[arg(long)]
        acknowledge_downgrade: bool,
    },
    /// Check a license file against trusted roots; prints "valid", or fails with the reason.
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// A root public key (root.pub) to trust; repeat for several.
        #[arg(long = "trusted-root", value_name = "FILE", required = true)]
        trusted_roots: Vec<PathBuf>,
        /// The installation the license must be for.
        #[arg(long)]
        installation_id: Option<String>,
    },
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// The directory holding issuer.key and issuer.cert.
    #[arg(long, value_name = "DIR")]
    issuer: PathBuf,
    /// The installation the license is for.
    #[arg(long)]
    installation_id: String,
    #[arg(long)]
    customer: String,
    /// A number, or "unlimited".
    #[arg(long, value_parser = parse_seats)]
    seats: Seats,
    /// When it starts to count (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
    not_before: Option<Timestamp>,
    /// When it ends (RFC 3339) [default: never].
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
    not_after: Option<Timestamp>,
    /// The end of its grace period after not-after (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
    grace_until: Option<Timestamp>,
    /// Its serial [default: random, like L-3F9A0C12B7E4].
    #[arg(long)]
    serial: Option<String>,
    /// Serials of the licenses it replaces, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERIALS")]
    supersedes: Vec<String>,
    /// A feature it unlocks; repeat for several.
    #[arg(long = "entitlement", value_name = "NAME")]
    entitlements: Vec<String>,
    /// The license file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl LicenseCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let now = SystemClock.now().trunc_subsecs(0);
        match self.action {
            LicenseAction::InitAuthority { out } => init_authority(&out),
            LicenseAction::NewIssuer {
                authority,
                valid_from,
                valid_until,
                out,
            } => new_issuer(
                &authority,
                valid_from.unwrap_or(now),
                valid_until,
                now,
                &out,
            ),
            LicenseAction::Issue(args) => issue_license(args, now),
            LicenseAction::Inspect { file } => inspect_license(&file),
            LicenseAction::Verify {
                file,
                trusted_roots,
                installation_id,
            } => verify_license(&file, &trusted_roots, installation_id.as_deref(), now),
            LicenseAction::Install {
                file,
                server,
                token,
                ca_cert,
                acknowledge_downgrade,
            } => install_license(&file, &server, &token, &ca_cert, acknowledge_downgrade).await,
        }
    }
}

/// Posts the file to the server's API, which verifies it, and prints what the server says.
async fn install_license(
    file: &Path,
    server: &str,
    token: &str,
    ca_cert: &Path,
    acknowledge_downgrade: bool,
) -> anyhow::Result<()> {
    let text = read_text(file)?;
    let trust = ServerTrust::from_ca_pem(&read_text(ca_cert)?)
        .with_context(|| format!("{} is not a CA certificate", ca_cert.display()))?;
    let tls = trust.client_config(Arc::default())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
        .build()?;
    let query = if acknowledge_downgrade {
        "?acknowledge_downgrade=true"
    } else {
        ""
    };
    let url = format!("{}/api/v1/licenses{query}", server.trim_end_matches('/'));
    let response = client
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/x-pem-file")
        .body(text)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if !status.is_success() {
        let code = body["code"].as_str().unwrap_or("error");
        let message = body["message"].as_str().unwrap_or_default();
        if let Some(routers) = body["routers"].as_array() {
            for router in routers {
                eprintln!(
                    "  would become excess: {} ({})",
                    router["serial"].as_str().unwrap_or_default(),
                    router["name"].as_str().unwrap_or_default()
                );
            }
        }
        bail!("{code}: {message}");
    }
    println!(
        "installed {} for {}: {} seats, {}",
        body["serial"].as_str().unwrap_or_default(),
        body["customer"].as_str().unwrap_or_default(),
        body["seats"],
        body["status"].as_str().unwrap_or_default()
    );
    Ok(())
}

fn init_authority(out: &Path) -> anyhow::Result<()> {
    let key_path = out.join(ROOT_KEY_FILE);
    let public_path = out.join(ROOT_PUBLIC_KEY_FILE);
    refuse_existing(&[&key_path, &public_path])?;
    let root = RootKey::from_seed(random_seed());
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_new_file(&key_path, &root.to_armored(), FileAccess::OwnerOnly)?;
    write_new_file(
        &public_path,
        &root.public_key().to_armored(),
        FileAccess::Public,
    )?;
    println!("root key {}", root.public_key().key_id());
    println!(
        "{}: keep it offline; {}: give it to installations",
        key_path.display(),
        public_path.display()
    );
    Ok(())
}

fn new_issuer(
    authority: &Path,
    valid_from: Timestamp,
    valid_until: Timestamp,
    now: Timestamp,
    out: &Path,
) -> anyhow::Result<()> {
    if valid_until <= valid_from {
        bail!("--valid-until must be later than --valid-from");
    }
    let root_path = authority.join(ROOT_KEY_FILE);
    let root = RootKey::from_armored(&read_text(&root_path)?)
        .with_context(|| format!("cannot read the root key {}", root_path.display()))?;
    let key_path = out.join(ISSUER_KEY_FILE);
    let certificate_path = out.join(ISSUER_CERTIFICATE_FILE);
    refuse_existing(&[&key_path, &certificate_path])?;
    let issuer = IssuerKey::from_seed(random_seed());
    let certificate = root.certify(&issuer.public_key(), valid_from, valid_until, now);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_new_file(&key_path, &issuer.to_armored(), FileAccess::OwnerOnly)?;
    write_new_file(
        &certificate_path,
        &certificate.to_armored(),
        FileAccess::Public,
    )?;
    println!(
        "issuer key {}, certified by root {} to issue licenses from {} to {}",
        issuer.public_key().key_id(),
        root.public_key().key_id(),
        format_timestamp(valid_from),
        format_timestamp(valid_until)
    );
    Ok(())
}

fn issue_license(args: IssueArgs, now: Timestamp) -> anyhow::Result<()> {
    refuse_existing(&[&args.out])?;
    let key_path = args.issuer.join(ISSUER_KEY_FILE);
    let certificate_path = args.issuer.join(ISSUER_CERTIFICATE_FILE);
    let issuer = IssuerKey::from_armored(&read_text(&key_path)?)
        .with_context(|| format!("cannot read the issuer key {}", key_path.display()))?;
    let certificate = SignedIssuerCertificate::from_armored(&read_text(&certificate_path)?)
        .with_context(|| {
            format!(
                "cannot read the issuer certificate {}",
                certificate_path.display()
            )
        })?;
    if !certificate.is_for(&issuer.public_key()) {
        bail!(
            "{} is not the certificate of the key in {}",
            certificate_path.display(),
            key_path.display()
        );
    }
    let window = certificate.certificate();
    if !window.covers(now) {
        bail!(
            "the issuer certificate is valid for licenses issued from {} to {}, not now",
            format_timestamp(window.not_before),
            format_timestamp(window.not_after)
        );
    }
    let claims = LicenseClaims {
        serial: args.serial.unwrap_or_else(random_serial),
        installation_id: args.installation_id,
        customer: args.customer,
        seats: args.seats,
        not_before: args.not_before.unwrap_or(now),
        not_after: args.not_after,
        grace_until: args.grace_until,
        issued_at: now,
        supersedes: args.supersedes,
        entitlements: args.entitlements,
    };
    claims
        .check_consistency()
        .context("refusing to issue this license")?;
    write_new_file(
        &args.out,
        &issue(&issuer, &certificate, &claims),
        FileAccess::Public,
    )?;
    println!(
        "license {} written to {}",
        claims.serial,
        args.out.display()
    );
    Ok(())
}

fn inspect_license(file: &Path) -> anyhow::Result<()> {
    let (claims, certificate) = inspect(&read_text(file)?)
        .map_err(|rejection| anyhow::anyhow!("{}: {rejection}", rejection.code()))
        .with_context(|| format!("cannot read the license {}", file.display()))?;
    let optional = |at: Option<Timestamp>| at.map_or_else(|| "-".to_owned(), format_timestamp);
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("License (not verified)");
    println!("  serial:             {}", claims.serial);
    println!("  installation id:    {}", claims.installation_id);
    println!("  customer:           {}", claims.customer);
    println!("  seats:              {}", claims.seats);
    println!(
        "  not before:         {}",
        format_timestamp(claims.not_before)
    );
    println!("  not after:          {}", optional(claims.not_after));
    println!("  grace until:        {}", optional(claims.grace_until));
    println!(
        "  issued at:          {}",
        format_timestamp(claims.issued_at)
    );
    println!("  supersedes:         {}", list(&claims.supersedes));
    println!("  entitlements:       {}", list(&claims.entitlements));
    println!("Issuer certificate (not verified)");
    println!("  issuer key id:      {}", certificate.key_id);
    println!("  root key id:        {}", certificate.root_key_id);
    println!(
        "  issues from:        {}",
        format_timestamp(certificate.not_before)
    );
    println!(
        "  issues until:       {}",
        format_timestamp(certificate.not_after)
    );
    println!(
        "  certified at:       {}",
        format_timestamp(certificate.issued_at)
    );
    Ok(())
}

fn verify_license(
    file: &Path,
    trusted_root_files: &[PathBuf],
    installation_id: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<()> {
    let trusted_roots = trusted_root_files
        .iter()
        .map(|path| {
            RootPublicKey::from_armored(&read_text(path)?)
                .with_context(|| format!("cannot read the root public key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Only an installation knows which licenses it holds; a file on its own supersedes nothing.
    match verify(
        &read_text(file)?,
        &trusted_roots,
        installation_id,
        now,
        |_| false,
    ) {
        Ok(_) => {
            println!("valid");
            Ok(())
        }
        Err(rejection) => bail!("{}: {rejection}", rejection.code()),
    }
}

/// Who may read a file written.
#[derive(Debug, Clone, Copy)]
enum FileAccess {
    /// Secret keys.
    OwnerOnly,
    Public,
}

/// Writes a file that must not exist yet, so that no key or license is ever overwritten.
fn write_new_file(path: &Path, contents: &str, access: FileAccess) -> anyhow::Result<()> {
    let mode = match access {
        FileAccess::OwnerOnly => 0o600,
        FileAccess::Public => 0o644,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Checks all the files first, so that a refusal leaves no half-written set behind.
fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        if path.exists() {
            bail!("{} already exists; not overwriting it", path.display());
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn random_seed() -> [u8; 32] {
    rand::rng().random()
}

/// `L-` and 12 uppercase hex digits: 48 random bits, plenty for one vendor's licenses.
fn random_serial() -> String {
    let bytes: [u8; 6] = rand::rng().random();
    let digits: String = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
    format!("L-{digits}")
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| format!("not an RFC 3339 time like 2026-01-31T00:00:00Z: {error}"))
}

fn parse_seats(text: &str) -> Result<Seats, String> {
    if text == "unlimited" {
        return Ok(Seats::Unlimited);
    }
    text.parse()
        .map(Seats::Count)
        .map_err(|_| format!("seats are a number or \"unlimited\", not \"{text}\""))
}

fn format_timestamp(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
