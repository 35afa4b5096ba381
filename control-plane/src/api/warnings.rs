//! Warnings for the client, gathered while a request is served and sent as
//! `Warning: 299 - "..."` headers (kubectl prints them as `Warning: ...`).

use std::cell::RefCell;

use axum::http::HeaderValue;
use axum::response::Response;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Serve `f` with a place to gather warnings; attach them to its response.
pub async fn scope(f: impl std::future::Future<Output = Response>) -> Response {
    let (mut response, gathered) = WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let response = f.await;
            (response, WARNINGS.with(|w| w.take()))
        })
        .await;
    for text in gathered {
        let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

/// Add a warning to the request being served (outside one, it is dropped).
pub fn add(text: String) {
    let _ = WARNINGS.try_with(|w| w.borrow_mut().push(text));
}
