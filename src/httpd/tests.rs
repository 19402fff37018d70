use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A raw request (so targets reach the server exactly as written):
/// status, body.
async fn get(server: &HttpServer, method: &str, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.address()).await.unwrap();
    stream
        .write_all(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn recorder() -> (Logger, Arc<Mutex<Vec<RequestLog>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let logger: Logger = Arc::new(move |log: &RequestLog| sink.lock().unwrap().push(log.clone()));
    (logger, seen)
}

/// Waits until `n` requests are reported: the report follows the answer.
async fn reported(seen: &Mutex<Vec<RequestLog>>, n: usize) -> Vec<RequestLog> {
    loop {
        {
            let seen = seen.lock().unwrap();
            if seen.len() >= n {
                return seen.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn serves_the_directory_and_nothing_outside_it() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret"), "outside").unwrap();
    let root = outer.path().join("http");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("preseed.cfg"), "d-i foo\n").unwrap();
    std::fs::write(root.join("sub/a b.txt"), "spaced").unwrap();
    let (logger, seen) = recorder();
    let server = HttpServer::start(LOCAL, 18000, 18999, Content::Directory(root), logger)
        .await
        .unwrap();
    assert!((18000..=18999).contains(&server.port()));

    assert_eq!(
        get(&server, "GET", "/preseed.cfg").await,
        (200, "d-i foo\n".into())
    );
    assert_eq!(
        get(&server, "GET", "/sub/a%20b.txt?x=1").await,
        (200, "spaced".into())
    );
    assert_eq!(get(&server, "HEAD", "/preseed.cfg").await, (200, "".into()));
    for escape in [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/..%2fsecret",
    ] {
        assert_eq!(get(&server, "GET", escape).await.0, 404, "{escape}");
    }
    assert_eq!(get(&server, "GET", "/missing").await.0, 404);
    assert_eq!(get(&server, "GET", "/sub").await.0, 301);
    let (status, listing) = get(&server, "GET", "/sub/").await;
    assert_eq!(status, 200);
    assert!(listing.contains("a b.txt"), "{listing}");
    assert_eq!(get(&server, "POST", "/preseed.cfg").await.0, 405);

    let logs = reported(&seen, 11).await;
    assert_eq!(
        (
            logs[0].method.as_str(),
            logs[0].path.as_str(),
            logs[0].status,
            logs[0].bytes
        ),
        ("GET", "/preseed.cfg", 200, 8)
    );
    assert_eq!(
        logs[0].to_string(),
        "HTTP GET /preseed.cfg -> 200 (8 bytes)"
    );
    assert_eq!((logs[2].method.as_str(), logs[2].bytes), ("HEAD", 0));
}

#[tokio::test]
async fn serves_http_content() {
    let files = BTreeMap::from([("/ks.cfg".to_string(), "text\n".to_string())]);
    let (logger, _) = recorder();
    let server = HttpServer::start(LOCAL, 19000, 19999, Content::Files(files), logger)
        .await
        .unwrap();
    assert_eq!(get(&server, "GET", "/ks.cfg").await, (200, "text\n".into()));
    assert_eq!(get(&server, "GET", "/./ks.cfg").await.0, 200);
    assert_eq!(get(&server, "GET", "/other").await.0, 404);
}

#[tokio::test]
async fn a_range_with_no_free_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let (logger, _) = recorder();
    let err = HttpServer::start(LOCAL, port, port, Content::Files(BTreeMap::new()), logger)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "no free port between {port} and {port} on 127.0.0.1 for the HTTP server"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn dropping_the_server_closes_its_port() {
    let (logger, _) = recorder();
    let server = HttpServer::start(LOCAL, 20000, 20999, Content::Files(BTreeMap::new()), logger)
        .await
        .unwrap();
    let address = server.address();
    drop(server);
    // The abort lands at the task's next poll: wait for the listener to go.
    for _ in 0..200 {
        if TcpStream::connect(address).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server still accepts connections on {address}");
}

#[test]
fn paths_are_cleaned_as_go_does() {
    assert_eq!(clean("/a/./b/../c"), Some("/a/c".into()));
    assert_eq!(clean("/../../x"), Some("/x".into()));
    assert_eq!(clean("/dir/"), Some("/dir/".into()));
    assert_eq!(clean("/%2e%2e/x"), Some("/x".into()));
    assert_eq!(clean("x"), None);
    assert_eq!(clean("/a%00b"), None);
    assert_eq!(clean("/%zz"), None);
}

use files::clean;
