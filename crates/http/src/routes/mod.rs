//! The routes, one module each. What matches no route is axum's: 404 for an unknown path, 405
//! with `Allow` for a known path with another method (RFC 9110 §15.5.5, §15.5.6).

pub mod export;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::HttpServer;

pub fn router(server: Arc<HttpServer>) -> Router {
    Router::new()
        .route("/export.zip", get(export::export))
        .with_state(server)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use axum::body::Body;
    use axum::http::{header, Method, Request, StatusCode};
    use axum::response::Response;
    use base64::Engine;
    use tower_service::Service;
    use trimaran_core::store::{Store, StoreUrl};
    use trimaran_core::{Config, Core};

    use super::*;
    use crate::listener::Peer;

    async fn server(dir: &Path) -> Arc<HttpServer> {
        let url: StoreUrl = format!("sqlite:{}", dir.join("t.db").display())
            .parse()
            .unwrap();
        let store = Store::open(&url).await.unwrap();
        store.meta().add_domain("example.test").await.unwrap();
        let hash = trimaran_core::auth::hash_password("pw").unwrap();
        store
            .meta()
            .add_account("alice@example.test", &hash)
            .await
            .unwrap();
        let config = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        let tls = trimaran_core::tls::server_config(None, None, dir, "localhost").unwrap();
        HttpServer::new(Core::new(store, Arc::new(config)), tls)
    }

    async fn call(router: &Router, method: Method, uri: &str, auth: Option<&str>) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
            request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        let mut request = request.body(Body::empty()).unwrap();
        let peer: SocketAddr = "192.0.2.1:4711".parse().unwrap();
        request.extensions_mut().insert(Peer(peer));
        router.clone().call(request).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_of_the_export_route() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(server(dir.path()).await);
        let r = call(&router, Method::GET, "/export.zip", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            crate::auth::CHALLENGE
        );
        let r = call(&router, Method::GET, "/elsewhere", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = call(&router, Method::DELETE, "/export.zip", None).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
        let alice = Some("alice@example.test:pw");
        let r = call(&router, Method::GET, "/export.zip?mailbox=Nowhere", alice).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = call(&router, Method::GET, "/export.zip?folder=INBOX", alice).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call(&router, Method::GET, "/export.zip", alice).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/zip");
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
        let zip = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        // A zip that ends with its end-of-central-directory record (APPNOTE 4.3.16).
        assert!(zip.starts_with(b"PK"));
        assert!(zip.windows(4).any(|w| w == b"PK\x05\x06"));
    }
}
