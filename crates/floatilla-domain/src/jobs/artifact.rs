//! Artifacts: the files jobs install, which kind of job takes which kind of file, and the byte
//! ranges a router asks for when it resumes an interrupted download.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::JobKind;

/// What an artifact holds, which decides the jobs that may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A firmware image (`firmware_update`).
    Firmware,
    /// A software package: an app or a container (`software_install`).
    Software,
    /// A configuration file (`config_update`).
    Config,
    /// Certificates for the router's own services: VPN, web interface, CA bundles
    /// (`certificate_update`).
    Certificates,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 4] = [
        ArtifactKind::Firmware,
        ArtifactKind::Software,
        ArtifactKind::Config,
        ArtifactKind::Certificates,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Firmware => "firmware",
            ArtifactKind::Software => "software",
            ArtifactKind::Config => "config",
            ArtifactKind::Certificates => "certificates",
        }
    }

    /// The job that installs an artifact of this kind.
    pub fn installed_by(self) -> JobKind {
        match self {
            ArtifactKind::Firmware => JobKind::FirmwareUpdate,
            ArtifactKind::Software => JobKind::SoftwareInstall,
            ArtifactKind::Config => JobKind::ConfigUpdate,
            ArtifactKind::Certificates => JobKind::CertificateUpdate,
        }
    }

    /// The artifact a job of `kind` carries, if it carries one.
    pub fn for_job(kind: JobKind) -> Option<ArtifactKind> {
        match kind {
            JobKind::FirmwareUpdate => Some(ArtifactKind::Firmware),
            JobKind::SoftwareInstall => Some(ArtifactKind::Software),
            JobKind::ConfigUpdate => Some(ArtifactKind::Config),
            JobKind::CertificateUpdate => Some(ArtifactKind::Certificates),
            JobKind::SoftwareRemove | JobKind::Reboot => None,
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArtifactKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ArtifactKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown artifact kind `{s}` (expected firmware, software, config or \
                     certificates)"
                )
            })
    }
}

/// The bytes `first..=last` of a file, as one HTTP `Range` asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// How many bytes it holds (at least one).
    pub fn byte_count(self) -> u64 {
        self.last - self.first + 1
    }

    /// The `Content-Range` value answering it for a file of `size` bytes.
    pub fn content_range(self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.first, self.last)
    }
}

/// A `Range` header that asks for nothing the file has: answered 416.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the range asks for bytes this file of {size} bytes does not have")]
pub struct UnsatisfiableRange {
    pub size: u64,
}

/// The range a `Range` header asks of a file of `size` bytes: `None` for the whole file (no
/// header, or one this server does not serve in part, such as several ranges or another unit:
/// HTTP lets a server answer those with the whole file).
pub fn requested_range(
    header: Option<&str>,
    size: u64,
) -> Result<Option<ByteRange>, UnsatisfiableRange> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = UnsatisfiableRange { size };
    let range = match (first.trim(), last.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => {
            let Ok(suffix) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            ByteRange {
                first: size.saturating_sub(suffix),
                last: size - 1,
            }
        }
        (first, last) => {
            let Ok(first) = first.parse::<u64>() else {
                return Ok(None);
            };
            let last = match last {
                "" => u64::MAX,
                last => match last.parse::<u64>() {
                    Ok(last) if last >= first => last,
                    _ => return Ok(None),
                },
            };
            if first >= size {
                return Err(unsatisfiable);
            }
            ByteRange {
                first,
                last: last.min(size - 1),
            }
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_artifact_kind_belongs_to_one_job_kind() {
        for kind in JobKind::ALL {
            assert_eq!(ArtifactKind::for_job(kind).is_some(), kind.needs_artifact());
        }
        for kind in ArtifactKind::ALL {
            assert_eq!(kind.as_str().parse::<ArtifactKind>(), Ok(kind));
            assert_eq!(ArtifactKind::for_job(kind.installed_by()), Some(kind));
        }
        assert!("image".parse::<ArtifactKind>().is_err());
    }

    #[test]
    fn ranges_resume_downloads_and_refuse_what_is_not_there() {
        let range = |h| requested_range(Some(h), 1000);
        assert_eq!(
            range("bytes=500-"),
            Ok(Some(ByteRange {
                first: 500,
                last: 999
            }))
        );
        assert_eq!(
            range("bytes=0-99"),
            Ok(Some(ByteRange { first: 0, last: 99 }))
        );
        assert_eq!(
            range("bytes=900-5000"),
            Ok(Some(ByteRange {
                first: 900,
                last: 999
            })),
            "a range past the end is cut at the end"
        );
        assert_eq!(
            range("bytes=-100"),
            Ok(Some(ByteRange {
                first: 900,
                last: 999
            }))
        );
        assert_eq!(range("bytes=1000-"), Err(UnsatisfiableRange { size: 1000 }));
        assert_eq!(range("bytes=-0"), Err(UnsatisfiableRange { size: 1000 }));
        assert_eq!(
            range("bytes=0-9,20-29"),
            Ok(None),
            "several: the whole file"
        );
        assert_eq!(range("items=0-9"), Ok(None));
        assert_eq!(range("bytes=9-3"), Ok(None), "malformed: the whole file");
        assert_eq!(requested_range(None, 1000), Ok(None));
        assert_eq!(
            ByteRange {
                first: 500,
                last: 999
            }
            .content_range(1000),
            "bytes 500-999/1000"
        );
    }
}
