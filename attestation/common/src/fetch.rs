//! Online collateral (AMD VCEKs, Intel PCS collateral, NVIDIA RIMs) is an
//! option, never a requirement: verifiers take a [`Fetcher`] so tests and
//! offline auditors pass files instead, and a [`FileCache`] keeps what was
//! fetched so a second verification needs no network.

use std::path::{Path, PathBuf};

/// One HTTP response, as much of it as collateral needs (Intel PCS puts issuer
/// chains in headers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FetchResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("fetching {url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("cache {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error("offline: {0} is not in the cache and fetching is disabled")]
    Offline(String),
}

/// HTTP GET, supplied by the binary (the libraries do no I/O of their own).
pub trait Fetcher {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError>;
}

/// A fetcher that never reaches the network: the default everywhere.
pub struct NoFetch;

impl Fetcher for NoFetch {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        Err(FetchError::Offline(url.to_string()))
    }
}

/// Responses kept on disk under a key derived from the URL (SHA-256), written
/// atomically, so a crash never leaves a half response that later verifies.
#[derive(Clone, Debug)]
pub struct FileCache {
    dir: PathBuf,
}

impl FileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, url: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        self.dir.join(hex::encode(Sha256::digest(url.as_bytes())))
    }

    /// The cached response for `url`, if any (status 200 only are cached).
    pub fn get(&self, url: &str) -> Option<FetchResponse> {
        let bytes = std::fs::read(self.path_for(url)).ok()?;
        decode_cached(&bytes)
    }

    pub fn put(&self, url: &str, response: &FetchResponse) -> Result<(), FetchError> {
        let err = |e: std::io::Error| FetchError::Cache {
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let path = self.path_for(url);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, encode_cached(response)).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

/// A fetcher that answers from the cache first and stores successful answers.
pub struct CachingFetcher<'a, F: Fetcher + ?Sized> {
    pub cache: &'a FileCache,
    pub inner: &'a F,
}

impl<F: Fetcher + ?Sized> Fetcher for CachingFetcher<'_, F> {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        if let Some(hit) = self.cache.get(url) {
            return Ok(hit);
        }
        let response = self.inner.get(url)?;
        if response.status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status,
            });
        }
        self.cache.put(url, &response)?;
        Ok(response)
    }
}

// Cache file: "DCFETCH1\n", then "name: value\n" header lines, "\n", then the body.
const CACHE_MAGIC: &[u8] = b"DCFETCH1\n";

fn encode_cached(r: &FetchResponse) -> Vec<u8> {
    let mut out = CACHE_MAGIC.to_vec();
    for (k, v) in &r.headers {
        if k.contains(['\n', ':']) || v.contains('\n') {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(&r.body);
    out
}

fn decode_cached(bytes: &[u8]) -> Option<FetchResponse> {
    let mut rest = bytes.strip_prefix(CACHE_MAGIC)?;
    let mut headers = Vec::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).ok()?;
        let (k, v) = line.split_once(": ")?;
        headers.push((k.to_string(), v.to_string()));
    }
    Some(FetchResponse {
        status: 200,
        headers,
        body: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Counting(Cell<u32>);
    impl Fetcher for Counting {
        fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
            self.0.set(self.0.get() + 1);
            Ok(FetchResponse {
                status: 200,
                headers: vec![("x-issuer-chain".into(), format!("chain-for-{url}"))],
                body: b"body\n\nwith blank lines".to_vec(),
            })
        }
    }

    #[test]
    fn second_fetch_comes_from_the_cache() {
        let dir = std::env::temp_dir().join(format!("dc-fetch-cache-{}", std::process::id()));
        let cache = FileCache::new(&dir);
        let inner = Counting(Cell::new(0));
        let f = CachingFetcher {
            cache: &cache,
            inner: &inner,
        };
        let a = f.get("https://example/a").unwrap();
        let b = f.get("https://example/a").unwrap();
        assert_eq!(a, b);
        assert_eq!(inner.0.get(), 1);
        assert_eq!(
            b.header("X-Issuer-Chain"),
            Some("chain-for-https://example/a")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn offline_by_default() {
        assert!(matches!(
            NoFetch.get("https://kdsintf.amd.com/x"),
            Err(FetchError::Offline(_))
        ));
    }

    #[test]
    fn corrupt_cache_files_are_misses() {
        assert!(decode_cached(b"garbage").is_none());
        assert!(decode_cached(b"DCFETCH1\nno-separator").is_none());
    }
}
