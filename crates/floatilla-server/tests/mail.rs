//! E-mail notices through SMTP: a capacity-drop notice reaches the tenant's contact address
//! through a relay on loopback, which refuses the first attempt so that the retry shows.

mod common;

use std::sync::{Arc, Mutex};

use chrono::Duration;
use common::*;
use floatilla_domain::Clock;
use floatilla_server::SmtpSettings;
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A mail the relay accepted.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: String,
}

/// An SMTP relay on loopback that speaks just enough of RFC 5321 for one client, and refuses
/// the first `refusals` transactions with a temporary failure.
struct Relay {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<usize>>,
}

impl Relay {
    async fn start(refusals: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0));
        let (inbox, counter) = (received.clone(), attempts.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (inbox, counter) = (inbox.clone(), counter.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut reply = async |text: &str| {
                        write
                            .write_all(format!("{text}\r\n").as_bytes())
                            .await
                            .is_ok()
                    };
                    reply("220 relay.test ESMTP").await;
                    let mut mail = Received {
                        from: String::new(),
                        to: Vec::new(),
                        data: String::new(),
                    };
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let answer = match verb.as_str() {
                            "EHLO" | "HELO" => "250 relay.test",
                            "MAIL" => {
                                let attempt = {
                                    let mut count = counter.lock().unwrap();
                                    *count += 1;
                                    *count
                                };
                                if attempt <= refusals {
                                    "451 try again later"
                                } else {
                                    mail.from = line.clone();
                                    "250 ok"
                                }
                            }
                            "RCPT" => {
                                mail.to.push(line.clone());
                                "250 ok"
                            }
                            "DATA" => {
                                reply("354 go ahead").await;
                                while let Ok(Some(data)) = lines.next_line().await {
                                    if data == "." {
                                        break;
                                    }
                                    mail.data.push_str(&data);
                                    mail.data.push('\n');
                                }
                                inbox.lock().unwrap().push(mail.clone());
                                "250 queued"
                            }
                            "RSET" => "250 ok",
                            "QUIT" => {
                                reply("221 bye").await;
                                return;
                            }
                            _ => "502 not implemented",
                        };
                        if !reply(answer).await {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            received,
            attempts,
        }
    }

    async fn wait_for_mail(&self) -> Received {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            if let Some(mail) = self.received.lock().unwrap().first().cloned() {
                return mail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail arrived; {} attempts",
                self.attempts.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_drop_notice_is_mailed_to_the_tenant_after_a_refused_attempt() {
    let relay = Relay::start(1).await;
    let config = floatilla_server::ServerConfig {
        allow_unsigned_licenses: true,
        smtp: Some(SmtpSettings {
            url: relay.url.clone(),
            from: "Floatilla <floatilla@fleet.test>".into(),
        }),
        ..test_config()
    };
    let server = TestServer::start_with(TestDb::sqlite(), config).await;
    let (status, tenant) = server
        .api(
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"contact_email": "noc@fleet.test"})),
        )
        .await;
    assert_eq!(status, 200, "{tenant}");
    let ends = server.clock.now() + Duration::days(20);
    let (status, _) = server
        .api(
            Method::POST,
            "/api/v1/licenses",
            Some(json!({"name": "until spring", "seats": 10, "not_after": ends})),
        )
        .await;
    assert_eq!(status, 201);
    // The drop is 20 days away: inside the 30-day window at once.
    server.clock.advance(Duration::seconds(1));

    let mail = relay.wait_for_mail().await;
    assert_eq!(*relay.attempts.lock().unwrap(), 2, "one refusal, one retry");
    assert!(mail.from.contains("floatilla@fleet.test"), "{mail:?}");
    assert_eq!(mail.to.len(), 1);
    assert!(mail.to[0].contains("noc@fleet.test"), "{mail:?}");
    assert!(
        mail.data
            .contains("Subject: Floatilla: license capacity drops in 20 days"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("10 seats expire"),
        "the notice itself is in the mail: {}",
        mail.data
    );
    assert_eq!(server.events("license_capacity_drop_notice").await.len(), 1);
}
