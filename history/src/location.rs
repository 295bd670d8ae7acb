//! Where a decision log lives: a local folder, or a prefix in an object
//! store (`s3://`, `gs://`, `az://`, or one built by the caller).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::HistoryError;

/// A local folder or an object-store prefix.
#[derive(Clone)]
pub struct Location {
    pub(crate) kind: LocationKind,
    display: String,
}

#[derive(Clone)]
pub(crate) enum LocationKind {
    /// A folder (or, for the reader, a file) on this machine. Written with
    /// plain file I/O so that a finished file can be made durable (fsync)
    /// before it is renamed into place.
    Local(PathBuf),
    /// A prefix in an object store.
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
    },
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl Location {
    /// A folder on this machine.
    pub fn local(path: impl Into<PathBuf>) -> Location {
        let path = path.into();
        Location {
            display: path.display().to_string(),
            kind: LocationKind::Local(path),
        }
    }

    /// A prefix of an object store the caller built (an `InMemory` store in
    /// tests, or a store with options this crate does not expose).
    /// `display` names it in messages and in the reader's file names.
    pub fn object_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        display: impl Into<String>,
    ) -> Location {
        Location {
            kind: LocationKind::Store {
                store,
                prefix: StorePath::from(prefix),
            },
            display: display.into(),
        }
    }

    /// Parses a folder path or an object-store URL: `s3://bucket/prefix`
    /// (S3 and S3-compatible stores), `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///abs/path`. Credentials and region
    /// come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`,
    /// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME` …, as the
    /// `object_store` crate reads them); `options` override them with the
    /// builder's configuration keys (`aws_endpoint`, `aws_allow_http`,
    /// `aws_region` …). An option the store does not know is an error.
    pub fn parse(spec: &str, options: &BTreeMap<String, String>) -> Result<Location, HistoryError> {
        let bad = |reason: String| HistoryError::Location {
            location: spec.to_owned(),
            reason,
        };
        if !spec.contains("://") {
            if !options.is_empty() {
                return Err(bad(format!(
                    "options ({}) apply to object stores only, and this is a local path",
                    options.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            return Ok(Location::local(spec));
        }
        let url = url::Url::parse(spec).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        let (scheme, prefix) = object_store::ObjectStoreScheme::parse(&url)
            .map_err(|e| bad(format!("{e}; use a folder path or s3://, gs://, az://")))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            object_store::ObjectStoreScheme::Local => {
                if !options.is_empty() {
                    return Err(bad("a file:// location takes no options".into()));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file path".into()))?;
                return Ok(Location {
                    display: spec.to_owned(),
                    kind: LocationKind::Local(path),
                });
            }
            object_store::ObjectStoreScheme::Memory => {
                Arc::new(object_store::memory::InMemory::new())
            }
            object_store::ObjectStoreScheme::AmazonS3 => s3(&url, options).map_err(bad)?,
            object_store::ObjectStoreScheme::GoogleCloudStorage => {
                gcs(&url, options).map_err(bad)?
            }
            object_store::ObjectStoreScheme::MicrosoftAzure => azure(&url, options).map_err(bad)?,
            _ => {
                return Err(bad(
                    "this kind of URL is not a supported decision-log store; use a folder path or s3://, gs://, az://".into(),
                ));
            }
        };
        Ok(Location {
            kind: LocationKind::Store { store, prefix },
            display: spec.trim_end_matches('/').to_owned(),
        })
    }

    /// The local folder, if this is one.
    pub fn as_local(&self) -> Option<&Path> {
        match &self.kind {
            LocationKind::Local(p) => Some(p),
            LocationKind::Store { .. } => None,
        }
    }
}

/// Applies `options` to a builder through its configuration-key type,
/// refusing keys it does not know (a typo would otherwise be ignored).
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
fn configure<B, K>(
    mut builder: B,
    options: &BTreeMap<String, String>,
    with: impl Fn(B, K, &str) -> B,
) -> Result<B, String>
where
    K: std::str::FromStr,
{
    for (key, value) in options {
        match key.to_ascii_lowercase().parse::<K>() {
            Ok(k) => builder = with(builder, k, value),
            Err(_) => return Err(format!("unknown option `{key}`")),
        }
    }
    Ok(builder)
}

#[cfg(feature = "aws")]
fn s3(url: &url::Url, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let builder = AmazonS3Builder::from_env().with_url(url.as_str());
    let builder = configure(builder, options, |b, k: AmazonS3ConfigKey, v| {
        b.with_config(k, v)
    })?;
    Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
}

#[cfg(not(feature = "aws"))]
fn s3(_: &url::Url, _: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    Err("this build has no S3 support (verdict-history's `aws` feature)".into())
}

#[cfg(feature = "gcp")]
fn gcs(url: &url::Url, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
    let builder = configure(builder, options, |b, k: GoogleConfigKey, v| {
        b.with_config(k, v)
    })?;
    Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
}

#[cfg(not(feature = "gcp"))]
fn gcs(_: &url::Url, _: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    Err("this build has no Google Cloud Storage support (verdict-history's `gcp` feature)".into())
}

#[cfg(feature = "azure")]
fn azure(
    url: &url::Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
    let builder = configure(builder, options, |b, k: AzureConfigKey, v| {
        b.with_config(k, v)
    })?;
    Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
}

#[cfg(not(feature = "azure"))]
fn azure(_: &url::Url, _: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    Err("this build has no Azure Blob Storage support (verdict-history's `azure` feature)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_local_and_takes_no_options() {
        let l = Location::parse("/var/log/verdict", &BTreeMap::new()).unwrap();
        assert_eq!(l.as_local(), Some(Path::new("/var/log/verdict")));
        let opts = BTreeMap::from([("aws_region".to_owned(), "x".to_owned())]);
        let e = Location::parse("/var/log/verdict", &opts).unwrap_err();
        assert!(e.to_string().contains("object stores only"), "{e}");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn an_unknown_s3_option_is_refused() {
        let opts = BTreeMap::from([("aws_endpont".to_owned(), "http://x".to_owned())]);
        let e = Location::parse("s3://bucket/log", &opts).unwrap_err();
        assert!(
            e.to_string().contains("unknown option `aws_endpont`"),
            "{e}"
        );
    }

    #[test]
    fn an_unsupported_scheme_is_refused() {
        let e = Location::parse("ftp://host/x", &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("ftp://host/x"), "{e}");
    }
}
