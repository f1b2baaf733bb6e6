//! Requests to addresses an agency chose (worker/src/egress.rs): a public
//! host that redirects to a private address is refused before the
//! redirect is followed, whether the new address is written as an IP or as
//! a name that resolves to one. The first host is a public-looking name
//! that this client alone resolves to a local server.

mod common;

use common::install_crypto;

/// A local server answering `/start` with a redirect to `location` and
/// anything else with "secret"; returns its port and the paths asked.
async fn redirecting_server(
    location: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split(' ').nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(path.clone());
            let answer = if path == "/start" {
                let to = location.replace("PORT", &port.to_string());
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret"
                    .to_string()
            };
            let _ = sock.write_all(answer.as_bytes()).await;
        }
    });
    (port, asked)
}

/// A client whose one public-looking name reaches the local server, as
/// a public host that redirects inward would.
fn client(port: u16, allow_private: bool) -> reqwest::Client {
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    rapport_worker::egress::guarded(
        reqwest::Client::builder().resolve("feeds.example.com", local),
        allow_private,
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_before_it_is_followed() {
    install_crypto();
    for (location, why) in [
        (
            "http://127.0.0.1:PORT/secret",
            "127.0.0.1 is not a public address",
        ),
        (
            "http://localhost:PORT/secret",
            "localhost resolves to no public address",
        ),
    ] {
        let (port, asked) = redirecting_server(location).await;
        let start = format!("http://feeds.example.com:{port}/start");
        let err = client(port, false).get(&start).send().await.unwrap_err();
        assert!(
            rapport_worker::egress::describe(&err).contains(why),
            "{location}: {}",
            rapport_worker::egress::describe(&err)
        );
        assert_eq!(*asked.lock().unwrap(), ["/start"], "{location}");

        // Allowed, the same redirect is followed to the inner host.
        let body = client(port, true)
            .get(&start)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "secret", "{location}");
        assert_eq!(*asked.lock().unwrap(), ["/start", "/start", "/secret"]);
    }
}

/// A proxy given by the environment would take the name and resolve it
/// itself; the guarded client never sends through one.
#[tokio::test]
async fn no_request_goes_through_a_proxy() {
    install_crypto();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let through_proxy = async |client: reqwest::Client| {
        let accepted = async {
            tokio::time::timeout(std::time::Duration::from_secs(2), proxy.accept())
                .await
                .is_ok()
        };
        let send = async {
            let r = client.get("http://metadata.internal.invalid/").send();
            tokio::time::timeout(std::time::Duration::from_secs(3), r).await
        };
        tokio::join!(send, accepted).1
    };
    let with_proxy = || reqwest::Client::builder().proxy(reqwest::Proxy::all(&proxy_url).unwrap());
    // Unguarded, the request goes to the proxy (what the test tells apart).
    assert!(through_proxy(with_proxy().build().unwrap()).await);
    let guarded = rapport_worker::egress::guarded(with_proxy(), false)
        .build()
        .unwrap();
    assert!(
        !through_proxy(guarded).await,
        "the request went to the proxy"
    );
}
