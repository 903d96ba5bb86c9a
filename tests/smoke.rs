mod common;
use common::*;

#[tokio::test]
async fn health_answers_ok() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status":"ok"})
    );
    let t = s.admin_token().await;
    assert!(!t.is_empty());
    s.stop().await;
}
