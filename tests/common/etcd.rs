//! A real etcd for the lock tests: on loopback, free ports, a temporary data dir; waits until it
//! answers; stop and start again on demand (same data, same ports); killed on Drop.
//! No `etcd` binary: the test is skipped with a message, unless `CELLCTL_REQUIRE_ETCD=1` (CI as
//! root), which makes it fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PortHold;

pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    bin: PathBuf,
    // Held while etcd is down, so no one else takes the port meanwhile.
    hold: Option<PortHold>,
}

fn binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("CELLCTL_ETCD_BIN").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(["/usr/bin/etcd", "/usr/local/bin/etcd"].map(PathBuf::from))
        .find(|p| p.is_file())
}

impl Etcd {
    /// A started etcd, or None (skip) when there is no `etcd` binary and it is not required.
    pub fn start() -> Option<Etcd> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var("CELLCTL_REQUIRE_ETCD").as_deref() != Ok("1"),
                "CELLCTL_REQUIRE_ETCD=1 but no etcd binary (Debian: apt-get install etcd-server)"
            );
            eprintln!("SKIPPED: no etcd binary (Debian: apt-get install etcd-server; or CELLCTL_ETCD_BIN)");
            return None;
        };
        let client = PortHold::new(0);
        let peer = PortHold::new(0);
        let (client_port, peer_port) = (client.port, peer.port);
        drop(peer);
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            client_port,
            peer_port,
            child: None,
            bin,
            hold: Some(client),
        };
        e.resume();
        Some(e)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Start (again) on the same ports and data, and wait until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        self.hold = None;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &self.url(),
                "--advertise-client-urls",
                &self.url(),
            ])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            assert!(Instant::now() < until, "etcd did not answer within 60s: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop it (SIGKILL: as a crashed server); its client port is held meanwhile.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.hold = Some(PortHold::new(self.client_port));
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut out = String::new();
        s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok() && out.contains("\"health\":\"true\"")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// The group's semaphore value as stored (etcd's own answer, decoded), or Null.
    pub fn semaphore(&self, group: &str) -> serde_json::Value {
        let key = super::base64(format!("com.coreos.airlock/groups/{group}/v1/semaphore").as_bytes());
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, json, base64, urllib.request\n\
                 r = urllib.request.urlopen(sys.argv[1] + '/v3/kv/range', json.dumps({'key': sys.argv[2]}).encode())\n\
                 kvs = json.load(r).get('kvs') or []\n\
                 print(base64.b64decode(kvs[0]['value']).decode() if kvs else 'null')\n",
            )
            .arg(self.url())
            .arg(key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
