//! Changing the captured ports while the sniffer runs, through `PORTS_FILE`: the pod's
//! annotations file, rewritten here exactly as the kubelet rewrites a downward-API volume.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    agent::{Agent, SNIFFER},
    dissector::{RawCapture, expected_record},
    netns::{SERVER_V4, http_get, topology},
    traffic::exchange,
};

/// A downward-API volume as the kubelet lays it out: the files live in a timestamped directory,
/// `..data` links to it and each file name links through `..data`; an update writes a new
/// directory and renames a new `..data` link over the old one (atomic), then removes the old
/// directory.
pub struct Podinfo {
    dir: PathBuf,
    version: u32,
}

impl Podinfo {
    /// A new directory in the temporary directory named `name`, holding `annotations`.
    pub fn new(name: &str, annotations: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut podinfo = Self { dir, version: 0 };
        podinfo.write(annotations);
        std::os::unix::fs::symlink("..data/annotations", podinfo.file()).unwrap();
        podinfo
    }

    /// The annotations file, as `PORTS_FILE` names it.
    pub fn file(&self) -> PathBuf {
        self.dir.join("annotations")
    }

    /// Replaces the annotations the way the kubelet does.
    pub fn write(&mut self, annotations: &str) {
        self.version += 1;
        let old = (self.version > 1).then(|| self.data_dir(self.version - 1));
        let new = self.data_dir(self.version);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("annotations"), annotations).unwrap();
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(new.file_name().unwrap(), &link).unwrap();
        std::fs::rename(&link, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    fn data_dir(&self, version: u32) -> PathBuf {
        self.dir
            .join(format!("..2026_11_28_10_00_0{version}.12345"))
    }
}

impl Drop for Podinfo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The annotations file of a pod with these ports (other annotations around it, as in a real pod).
pub fn annotations(ports: &str) -> String {
    format!(
        "kubectl.kubernetes.io/default-container=\"web\"\ntcp-sniffer/injected=\"true\"\ntcp-sniffer/ports=\"{ports}\"\n"
    )
}

/// Accepts connections on `listener` until told to stop, answering each as `traffic::serve` does.
fn serve_until(listener: TcpListener, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    use std::io::{Read as _, Write as _};
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let mut request = Vec::new();
                    stream.read_to_end(&mut request).unwrap();
                    stream.write_all(&vec![b'r'; request.len() / 2]).unwrap();
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    })
}

/// Captured before the change, not after.
const OLD: u16 = 8080;
/// Captured throughout.
const KEPT: u16 = 9090;
/// Captured after the change.
const NEW: u16 = 7070;

fn port_of(record: &Value) -> (u64, u64) {
    (
        record["src_port"].as_u64().unwrap(),
        record["dst_port"].as_u64().unwrap(),
    )
}

/// The client ports of the connections to `server_port` that have records.
fn clients_of(records: &[Value], server_port: u16) -> Vec<u64> {
    let mut clients: Vec<u64> = records
        .iter()
        .filter_map(|r| match port_of(r) {
            (client, server) if server == u64::from(server_port) => Some(client),
            (server, client) if server == u64::from(server_port) => Some(client),
            _ => None,
        })
        .collect();
    clients.sort_unstable();
    clients.dedup();
    clients
}

fn sample(metrics: &str, name: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .to_owned()
}

#[test]
fn ports_follow_the_annotations_file_without_a_restart() {
    testbed::skip_unless_root!();
    let topology = topology();
    let addr = |port: u16| -> SocketAddr { format!("{SERVER_V4}:{port}").parse().unwrap() };
    let listeners = topology
        .server
        .run(move || [OLD, KEPT, NEW].map(|port| TcpListener::bind(addr(port)).expect("bind")));
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|l| serve_until(l, Arc::clone(&stop)))
        .collect();

    let mut podinfo = Podinfo::new("tcp-sniffer-podinfo", &annotations("8080,9090"));
    let metrics_addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let raw = RawCapture::start(&topology.server, "eth0");
    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env("PORTS", "8080,9090")
        .env("INTERFACE", "eth0")
        .env("PORTS_FILE", podinfo.file())
        .env("METRICS_ADDR", metrics_addr.to_string());
    let mut agent = Agent::attached(sniffer);

    // Connections to the kept port run throughout, one every few milliseconds.
    let steady_stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop = Arc::clone(&steady_stop);
        topology.client.spawn(move || {
            let mut clients = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                clients.push(u64::from(exchange(addr(KEPT), 300)));
                thread::sleep(Duration::from_millis(5));
            }
            clients
        })
    };
    let connect = |port: u16| {
        let addr = addr(port);
        u64::from(topology.client.run(move || exchange(addr, 100)))
    };
    let (old_before, new_before) = (connect(OLD), connect(NEW));

    podinfo.write(&annotations("9090, 7070"));
    let changed = agent.wait_for_log("ports changed", Duration::from_secs(10));
    assert_eq!(changed["ports"], json!([7070, 9090]), "{changed}");
    assert_eq!(changed["previous"], json!([8080, 9090]), "{changed}");
    let (old_after, new_after) = (connect(OLD), connect(NEW));

    // An invalid value is refused and the ports stay.
    podinfo.write(&annotations("7070,0"));
    let refused = agent.wait_for_log("ports not changed: annotation tcp-sniffer/ports \"7070,0\" is invalid: entry \"0\" is out of range: TCP ports are 1-65535", Duration::from_secs(10));
    assert_eq!(refused["ports"], json!([7070, 9090]), "{refused}");
    let new_after_refusal = connect(NEW);

    steady_stop.store(true, Ordering::Relaxed);
    let steady_clients = steady.join().expect("steady client");
    let metrics = http_get(&topology, metrics_addr, "/metrics");
    thread::sleep(Duration::from_millis(300));
    let frames = raw.stop();
    let finished = agent.terminate();
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("server");
    }
    assert!(finished.status.success(), "{:#?}", finished.logs);

    let records = finished.records();
    // Before the change 8080 was captured and 7070 not; after it, the reverse, also after the
    // refused value.
    let old = clients_of(&records, OLD);
    let new = clients_of(&records, NEW);
    assert_eq!(old, vec![old_before], "8080 only before the change");
    let mut expected_new = vec![new_after, new_after_refusal];
    expected_new.sort_unstable();
    assert_eq!(new, expected_new, "7070 only after the change");
    assert!(!new.contains(&new_before) && !old.contains(&old_after));

    // The kept port, packet by packet against the independent capture: nothing lost while the
    // bitmap changed twice, nothing recorded twice.
    assert!(
        steady_clients.len() > 20,
        "only {} steady connections",
        steady_clients.len()
    );
    let kept = |r: &Value| port_of(r).0 == u64::from(KEPT) || port_of(r).1 == u64::from(KEPT);
    let mut expected: Vec<String> = frames
        .iter()
        .filter_map(expected_record)
        .filter(kept)
        .map(|r| r.to_string())
        .collect();
    let mut actual: Vec<String> = records
        .iter()
        .filter(|r| kept(r))
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("ts");
            r.to_string()
        })
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual.len(), expected.len(), "kept-port records vs capture");
    assert_eq!(actual, expected);
    assert_eq!(clients_of(&records, KEPT), {
        let mut c = steady_clients;
        c.sort_unstable();
        c
    });

    assert_eq!(
        sample(
            &metrics,
            "tcp_sniffer_ports_changes_total{result=\"applied\"}"
        ),
        "tcp_sniffer_ports_changes_total{result=\"applied\"} 1"
    );
    assert_eq!(
        sample(
            &metrics,
            "tcp_sniffer_ports_changes_total{result=\"refused\"}"
        ),
        "tcp_sniffer_ports_changes_total{result=\"refused\"} 1"
    );
    assert_eq!(
        sample(&metrics, "tcp_sniffer_ports_captured "),
        "tcp_sniffer_ports_captured 2"
    );
    let stopped = finished.log("stopped");
    assert_eq!(stopped["dropped"], 0);
    assert_eq!(stopped["records"], records.len());
    assert!(Path::new(&podinfo.dir).exists());
}
