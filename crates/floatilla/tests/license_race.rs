//! The floating license pool shared by two `floatilla serve` processes on one PostgreSQL
//! database: routers that connect at the same moment through either node get exactly the seats
//! there are, in the order of their places in line, and a license removed through one node sheds
//! the routers held by the other at once.
//!
//! Without a reachable PostgreSQL these tests return early after a notice (in CI they fail).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{A, B, Cluster, NODE_IDS, hello};
use floatilla_agent::connection::recv_message;
use floatilla_agent::{Connector, ControlChannel, ServerTrust};
use floatilla_protocol::{EnrollRequest, EnrollResponse, EnrollmentTokenString, ServerMessage};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Barrier, Semaphore};

/// Routers in the race, and the seats they race for.
const ROUTERS: usize = 200;
const SEATS: usize = 100;

/// Enrollments in flight at once while the fleet is set up.
const ENROLLING_AT_ONCE: usize = 16;

/// How long the whole fleet may take to be welcomed once it connects.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// How soon a router on one node hears that a license removed through the other node shed it:
/// a notification between nodes, far sooner than a node's 10-second heartbeat.
const SHED_WITHIN: Duration = Duration::from_secs(5);

/// One row of the `devices` table as PostgreSQL holds it.
#[derive(Debug)]
struct DeviceRow {
    id: String,
    place: Option<i64>,
    state: String,
}

/// `SELECT id, license_place, license_state FROM devices`, straight from PostgreSQL with
/// `psql`, so that nothing of the server stands between the test and what was stored.
fn stored_devices(database_url: &str) -> Vec<DeviceRow> {
    // The store's URL carries sqlx's own parameters, which psql does not take.
    let (base, _) = database_url.split_once('?').unwrap_or((database_url, ""));
    let output = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .args(["-d", base])
        .args(["-c", "SELECT id, license_place, license_state FROM devices"])
        .output()
        .expect("run psql (PostgreSQL's client) to read the devices table");
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            let [id, place, state] = fields[..] else {
                panic!("unexpected psql row: {line}");
            };
            DeviceRow {
                id: id.to_owned(),
                place: (!place.is_empty())
                    .then(|| place.parse().unwrap_or_else(|_| panic!("a place: {line}"))),
                state: state.to_owned(),
            }
        })
        .collect()
}

impl Cluster {
    /// A GET that must succeed.
    async fn get(&self, node: usize, path: &str) -> Value {
        let (status, body) = self.api(node, Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path} on {}: {body}", NODE_IDS[node]);
        body
    }

    /// Adds an unsigned license of `seats` through `node`; answers its id.
    async fn add_license(&self, node: usize, name: &str, seats: usize) -> String {
        let (status, license) = self
            .api(
                node,
                Method::POST,
                "/api/v1/licenses",
                Some(json!({"name": name, "seats": seats})),
            )
            .await;
        assert_eq!(status, 201, "{license}");
        license["id"].as_str().expect("the license's id").to_owned()
    }

    /// Connectors as a new router has them: trusting only the token's CA fingerprint.
    fn enrolling_connector(&self, node: usize, token: &str) -> Connector {
        let fingerprint = token
            .parse::<EnrollmentTokenString>()
            .unwrap()
            .ca_fingerprint;
        Connector::new(
            self.address(node),
            &ServerTrust::CaFingerprint(fingerprint),
            Default::default(),
        )
        .unwrap()
    }

    /// Connectors as an enrolled router has them: trusting the installation's CA certificate.
    fn channel_connector(&self, node: usize) -> Connector {
        let trust = ServerTrust::from_ca_pem(&self.ca_pem).unwrap();
        Connector::new(self.address(node), &trust, Default::default()).unwrap()
    }

    /// The ids of the routers the API of `node` lists in `license_state`, and its total.
    async fn devices_in_state(&self, node: usize, license_state: &str) -> (HashSet<String>, u64) {
        let list = self
            .get(
                node,
                &format!("/api/v1/devices?license_state={license_state}&limit=1000"),
            )
            .await;
        assert!(list["next"].is_null(), "one page holds them all: {list}");
        let ids = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|d| d["id"].as_str().expect("an id").to_owned())
            .collect();
        (ids, list["total"].as_u64().expect("a total"))
    }
}

async fn enroll(connector: &Connector, token: &str, serial: &str) -> EnrollResponse {
    connector
        .enroll(&EnrollRequest {
            token: token.to_owned(),
            serial: serial.to_owned(),
            model: "MRX5".into(),
            firmware: "5.2.1".into(),
            agent_version: "test".into(),
            credential: None,
        })
        .await
        .unwrap_or_else(|e| panic!("enroll {serial}: {e}"))
}

/// An enrolled router that has not connected yet.
struct Enrolled {
    serial: String,
    node: usize,
    device_id: String,
    credential: String,
}

/// A connected router: where it connected and what WELCOME told it.
struct Connected {
    enrolled: Enrolled,
    channel: ControlChannel,
}

impl Connected {
    fn license(&self) -> (&str, Option<&str>) {
        let license = &self.channel.welcome.license;
        (license.state.as_str(), license.reason.as_deref())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_racing_through_two_nodes_get_exactly_the_seats_first_in_line() {
    let Some(cluster) = Cluster::start(&["--allow-unsigned-licenses"]).await else {
        return;
    };
    cluster.add_license(A, "a hundred seats", SEATS).await;
    let pool = cluster.get(B, "/api/v1/license-pool").await;
    assert_eq!(
        (&pool["capacity"], &pool["in_use"], &pool["free"]),
        (&json!(SEATS), &json!(0), &json!(SEATS)),
        "node B sees the license added through node A: {pool}"
    );

    // The fleet enrolls beforehand, half through each node.
    let token = cluster.enrollment_token(A, "race").await;
    let enrolling = Arc::new(Semaphore::new(ENROLLING_AT_ONCE));
    let mut enrollments = tokio::task::JoinSet::new();
    for n in 0..ROUTERS {
        let node = n % 2;
        let connector = cluster.enrolling_connector(node, &token);
        let token = token.clone();
        let enrolling = enrolling.clone();
        enrollments.spawn(async move {
            let _permit = enrolling.acquire_owned().await.unwrap();
            let serial = format!("RACE-{n:04}");
            let enrolled = enroll(&connector, &token, &serial).await;
            Enrolled {
                serial,
                node,
                device_id: enrolled.device_id,
                credential: enrolled.credential,
            }
        });
    }
    let fleet: Vec<Enrolled> = enrollments.join_all().await;
    assert_eq!(fleet.len(), ROUTERS);

    // Then every router opens its channel at the same moment, half to each node.
    let started = Arc::new(Barrier::new(ROUTERS));
    let connectors = [cluster.channel_connector(A), cluster.channel_connector(B)];
    let mut opening = tokio::task::JoinSet::new();
    for enrolled in fleet {
        let connector = connectors[enrolled.node].clone();
        let started = started.clone();
        opening.spawn(async move {
            started.wait().await;
            let channel = connector
                .open_channel(hello(&enrolled.credential, &enrolled.serial), None)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{} connects to {}: {e}",
                        enrolled.serial, NODE_IDS[enrolled.node]
                    )
                });
            Connected { enrolled, channel }
        });
    }
    let racing = Instant::now();
    let mut routers: Vec<Connected> = tokio::time::timeout(CONNECT_WITHIN, opening.join_all())
        .await
        .unwrap_or_else(|_| panic!("the fleet was not welcomed within {CONNECT_WITHIN:?}"));
    let welcomed_in = racing.elapsed();
    for router in &routers {
        assert_eq!(router.channel.welcome.device_id, router.enrolled.device_id);
    }

    // What WELCOME told the routers: exactly as many licensed as there are seats.
    let welcomed: HashMap<&str, &str> = routers
        .iter()
        .map(|r| (r.enrolled.device_id.as_str(), r.license().0))
        .collect();
    assert_eq!(welcomed.len(), ROUTERS, "distinct routers");
    let licensed: HashSet<String> = routers
        .iter()
        .filter(|r| r.license().0 == "licensed")
        .map(|r| r.enrolled.device_id.clone())
        .collect();
    assert_eq!(
        licensed.len(),
        SEATS,
        "routers welcomed as licensed (the fleet took {welcomed_in:?})"
    );
    for router in &routers {
        let expected = match router.license().0 {
            "licensed" => ("licensed", Some("granted")),
            _ => ("excess", Some("denied_pool_full")),
        };
        assert_eq!(router.license(), expected, "{}", router.enrolled.serial);
    }

    // What both nodes' APIs say.
    for node in [A, B] {
        let pool = cluster.get(node, "/api/v1/license-pool").await;
        assert_eq!(
            (
                &pool["capacity"],
                &pool["in_use"],
                &pool["free"],
                &pool["excess"],
                &pool["pinned"]
            ),
            (
                &json!(SEATS),
                &json!(SEATS),
                &json!(0),
                &json!(ROUTERS - SEATS),
                &json!(0)
            ),
            "{}'s pool: {pool}",
            NODE_IDS[node]
        );
        let (listed, total) = cluster.devices_in_state(node, "licensed").await;
        assert_eq!(total, SEATS as u64, "licensed on {}", NODE_IDS[node]);
        assert_eq!(
            listed, licensed,
            "{} lists the routers WELCOME licensed",
            NODE_IDS[node]
        );
        let (_, total) = cluster.devices_in_state(node, "excess").await;
        assert_eq!(
            total,
            (ROUTERS - SEATS) as u64,
            "excess on {}",
            NODE_IDS[node]
        );
    }

    // What the database holds: distinct places, and the seats with the first hundred of them.
    let mut rows = stored_devices(&cluster.database_url);
    assert_eq!(rows.len(), ROUTERS, "{rows:#?}");
    let unplaced: Vec<&DeviceRow> = rows.iter().filter(|r| r.place.is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "routers without a place: {unplaced:#?}"
    );
    let places: HashSet<i64> = rows.iter().filter_map(|r| r.place).collect();
    assert_eq!(places.len(), ROUTERS, "places are distinct: {rows:#?}");
    rows.sort_by_key(|r| r.place);
    let (first, rest) = rows.split_at(SEATS);
    let out_of_line: Vec<&DeviceRow> = first
        .iter()
        .filter(|r| r.state != "licensed")
        .chain(rest.iter().filter(|r| r.state != "excess"))
        .collect();
    assert!(
        out_of_line.is_empty(),
        "the first {SEATS} in line must be licensed and the rest excess; out of line: \
         {out_of_line:#?}"
    );
    for row in &rows {
        assert_eq!(
            Some(&row.state.as_str()),
            welcomed.get(row.id.as_str()),
            "the stored state of {} is what WELCOME said",
            row.id
        );
    }

    // Nothing changed after WELCOME: no router was told of another state since.
    for router in &mut routers {
        let pending =
            tokio::time::timeout(Duration::ZERO, recv_message(&mut router.channel.stream)).await;
        if let Ok(message) = pending {
            panic!(
                "{} heard after WELCOME: {message:?}",
                router.enrolled.serial
            );
        }
    }
    drop(routers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_removed_through_one_node_sheds_the_router_on_the_other_promptly() {
    let Some(cluster) = Cluster::start(&["--allow-unsigned-licenses"]).await else {
        return;
    };
    let license = cluster.add_license(A, "one seat", 1).await;
    let token = cluster.enrollment_token(A, "line 6").await;
    let enrolled = enroll(
        &cluster.enrolling_connector(A, &token),
        &token,
        "MRX5-00006",
    )
    .await;
    let mut channel = cluster
        .channel_connector(B)
        .open_channel(hello(&enrolled.credential, "MRX5-00006"), None)
        .await
        .unwrap_or_else(|e| panic!("MRX5-00006 connects to node B: {e}"));
    assert_eq!(channel.welcome.device_id, enrolled.device_id);
    assert_eq!(channel.welcome.license.state, "licensed");
    assert_eq!(channel.welcome.license.reason.as_deref(), Some("granted"));
    let (_, total) = cluster.devices_in_state(A, "licensed").await;
    assert_eq!(total, 1, "node A sees the router licensed");

    let removing = Instant::now();
    let (status, body) = cluster
        .api(
            A,
            Method::DELETE,
            &format!("/api/v1/licenses/{license}?acknowledge_downgrade=true"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let told = tokio::time::timeout(SHED_WITHIN, async {
        loop {
            match recv_message(&mut channel.stream).await {
                Ok(Some(ServerMessage::License(license))) => return license,
                Ok(Some(_)) => {}
                other => panic!("the channel ended before a LICENSE message: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("node B did not tell the router it was shed within {SHED_WITHIN:?}")
    });
    let took = removing.elapsed();
    assert_eq!(
        (told.state.as_str(), told.reason.as_deref()),
        ("excess", Some("shed_capacity_dropped"))
    );
    assert!(took < SHED_WITHIN, "took {took:?}");

    for node in [A, B] {
        let pool = cluster.get(node, "/api/v1/license-pool").await;
        assert_eq!(
            (&pool["capacity"], &pool["in_use"], &pool["excess"]),
            (&json!(0), &json!(0), &json!(1)),
            "{}'s pool: {pool}",
            NODE_IDS[node]
        );
        let device = cluster
            .get(node, &format!("/api/v1/devices/{}", enrolled.device_id))
            .await;
        assert_eq!(device["license_state"], "excess", "{device:#}");
    }
    drop(channel);
}
