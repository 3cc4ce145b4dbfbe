//! `response_format: url`: images kept in memory under unguessable 128-bit tokens for 60 minutes
//! (OpenAI's validity; `--image-url-ttl-secs`), served without auth like OpenAI's pre-signed
//! links, then forgotten (a periodic sweep frees them even when nobody asks again). Total memory
//! is capped: past the cap, the images closest to expiry go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::http::openai::errors::{OpenAiError, OpenAiErrorBody};
use crate::http::openai::OpenAiShared;
use crate::http::sweeper::Expiring;

/// How long a returned URL works (OpenAI: "valid for 60 minutes").
pub const URL_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Most bytes of images kept for URLs at once.
pub const MAX_STORED_BYTES: usize = 512 * 1024 * 1024;
/// Where the files are served (under the OpenAI prefix, so one proxy rule covers the face).
pub const FILES_ROUTE: &str = "/v1/images/files";

#[derive(Debug)]
struct StoredImage {
    bytes: Bytes,
    content_type: &'static str,
    expires_at: Instant,
}

/// Images waiting to be fetched by URL.
#[derive(Debug)]
pub struct UrlImageStore {
    images: Mutex<HashMap<String, StoredImage>>,
    lifetime: Duration,
    max_bytes: usize,
}

impl UrlImageStore {
    pub fn new(lifetime: Duration, max_bytes: usize) -> Arc<Self> {
        Arc::new(UrlImageStore { images: Mutex::new(HashMap::new()), lifetime, max_bytes })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StoredImage>> {
        self.images.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep an image and return its file name (`<32 hex digits>.<extension>`).
    pub fn put(&self, bytes: Vec<u8>, content_type: &'static str, extension: &str) -> String {
        // rand's thread generator is a CSPRNG (ChaCha), so tokens cannot be predicted.
        let name = format!("{:032x}.{extension}", rand::random::<u128>());
        let mut images = self.lock();
        let now = Instant::now();
        images.retain(|_, image| image.expires_at > now);
        let mut total: usize = images.values().map(|i| i.bytes.len()).sum::<usize>() + bytes.len();
        while total > self.max_bytes {
            let Some(oldest) = images.iter().min_by_key(|(_, i)| i.expires_at).map(|(k, _)| k.clone()) else { break };
            if let Some(evicted) = images.remove(&oldest) {
                total -= evicted.bytes.len();
            }
        }
        images.insert(name.clone(), StoredImage { bytes: Bytes::from(bytes), content_type, expires_at: now + self.lifetime });
        name
    }

    /// Images kept now (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image, its content type and how long it stays valid; `None` when unknown or expired.
    pub fn get(&self, name: &str) -> Option<(Bytes, &'static str, Duration)> {
        let mut images = self.lock();
        let now = Instant::now();
        match images.get(name) {
            Some(image) if image.expires_at > now => Some((image.bytes.clone(), image.content_type, image.expires_at - now)),
            Some(_) => {
                images.remove(name);
                None
            }
            None => None,
        }
    }
}

impl Expiring for UrlImageStore {
    fn sweep_expired(&self) -> usize {
        let mut images = self.lock();
        let (now, before) = (Instant::now(), images.len());
        images.retain(|_, image| image.expires_at > now);
        before - images.len()
    }
}

/// The absolute URL prefix clients reach this worker at: `--public-url`, else the request's Host.
pub fn public_base(public_url: Option<&str>, headers: &HeaderMap, fallback_host: &str) -> String {
    if let Some(url) = public_url.map(str::trim).filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| is_plain_host(h)).unwrap_or(fallback_host);
    format!("http://{host}")
}

/// Host headers we echo into links: a name or address and a port, nothing that could inject a path.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[utoipa::path(get, path = "/v1/images/files/{file}", tag = "openai",
    params(("file" = String, Path, description = "File name from a `url` in an images response")),
    responses(
        (status = 200, description = "The image; no API key needed (the name is the credential)", content_type = "image/png"),
        (status = 404, description = "Unknown or expired (links are valid for 60 minutes)", body = OpenAiErrorBody),
    ))]
pub async fn get_image_file(Extension(shared): Extension<OpenAiShared>, Path(file): Path<String>) -> Result<Response, OpenAiError> {
    let (bytes, content_type, remaining) = shared.urls.get(&file).ok_or_else(|| {
        OpenAiError::not_found("image_not_found", "This image link is unknown or has expired (links are valid for 60 minutes).")
    })?;
    let cache = format!("private, max-age={}", remaining.as_secs());
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_images_come_back_until_they_expire() {
        let store = UrlImageStore::new(Duration::from_millis(40), 1024);
        let name = store.put(vec![1, 2, 3], "image/png", "png");
        assert!(name.ends_with(".png") && name.len() == 32 + 4, "{name}");
        let (bytes, content_type, _) = store.get(&name).expect("stored");
        assert_eq!((bytes.as_ref(), content_type), (&[1u8, 2, 3][..], "image/png"));
        assert!(store.get("0123.png").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.get(&name).is_none(), "expired");
    }

    #[tokio::test]
    async fn the_periodic_sweep_frees_expired_images_nobody_asks_for() {
        let store = UrlImageStore::new(Duration::from_millis(30), 1024);
        store.put(vec![1], "image/png", "png");
        store.put(vec![2], "image/png", "png");
        assert_eq!(store.sweep_expired(), 0, "nothing expired yet");
        let sweeper = crate::http::sweeper::spawn_periodic_sweep(&store, Duration::from_millis(10), "test");
        assert!(sweeper.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.is_empty(), "{} images left", store.len());
    }

    #[test]
    fn tokens_differ_and_the_byte_cap_evicts_the_oldest() {
        let store = UrlImageStore::new(Duration::from_secs(60), 10);
        let first = store.put(vec![0; 6], "image/png", "png");
        let second = store.put(vec![0; 6], "image/png", "png");
        assert_ne!(first, second);
        assert!(store.get(&first).is_none(), "evicted to stay under the cap");
        assert!(store.get(&second).is_some());
    }

    #[test]
    fn links_use_the_public_url_or_a_sane_host_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(public_base(Some("https://img.example/sd/"), &headers, "127.0.0.1:1"), "https://img.example/sd");
        headers.insert(header::HOST, HeaderValue::from_static("worker.lan:8080"));
        assert_eq!(public_base(None, &headers, "127.0.0.1:1"), "http://worker.lan:8080");
        headers.insert(header::HOST, HeaderValue::from_static("evil.example/path?"));
        assert_eq!(public_base(None, &headers, "127.0.0.1:1"), "http://127.0.0.1:1");
    }
}
