//! Requests counted from the API server's side: its audit log (`e2e/manifests/audit-policy.yaml`,
//! one JSON line per request of a ServiceAccount outside kube-system, written to
//! `$E2E_STATE/logs/audit.log`), filtered by the controller's user. The same count for every
//! controller, whatever it reports about itself.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One request as the API server logged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The audit ID: a watch is logged when it starts and again when it ends, under one ID.
    pub id: String,
    pub verb: String,
    pub user: String,
    /// `resource` or `resource/subresource` (`rollouts/status`); empty for non-resource URLs.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub received: Timestamp,
    pub code: u16,
}

impl Request {
    pub fn is_write(&self) -> bool {
        is_write(&self.verb)
    }

    /// Leader election: a Lease renewed every few seconds whatever the workload.
    pub fn is_leader_election(&self) -> bool {
        self.resource == "leases"
    }
}

/// Verbs that change something.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    user: User,
    object_ref: Option<ObjectRef>,
    request_received_timestamp: String,
    response_status: Option<Status>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    code: Option<u16>,
}

/// One audit log line (JSON format), or None when it is not an audit event.
pub fn parse_line(line: &str) -> Option<Request> {
    let l: Line = serde_json::from_str(line).ok()?;
    let object = l.object_ref.unwrap_or(ObjectRef { resource: None, subresource: None, namespace: None, name: None });
    let mut resource = object.resource.unwrap_or_default();
    if let Some(sub) = object.subresource {
        resource = format!("{resource}/{sub}");
    }
    Some(Request {
        id: l.audit_id,
        verb: l.verb,
        user: l.user.username,
        resource,
        namespace: object.namespace.unwrap_or_default(),
        name: object.name.unwrap_or_default(),
        received: l.request_received_timestamp.parse().ok()?,
        code: l.response_status.and_then(|s| s.code).unwrap_or(0),
    })
}

/// The audit log followed from a point on (rotation included), keeping the requests of `users`.
pub struct AuditLog {
    path: PathBuf,
    users: Vec<String>,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
    seen: HashSet<String>,
    /// Every request of `users` logged since the log was opened, in log order, once per audit ID.
    pub requests: Vec<Request>,
}

impl AuditLog {
    /// Follows `path` from its current end: only requests logged from now on are read.
    pub fn open(path: impl Into<PathBuf>, users: &[&str]) -> anyhow::Result<Self> {
        let path = path.into();
        let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(AuditLog {
            path,
            users: users.iter().map(|u| format!("\"username\":\"{u}\"")).collect(),
            inode: meta.ino(),
            offset: meta.len(),
            partial: Vec::new(),
            seen: HashSet::new(),
            requests: Vec::new(),
        })
    }

    /// The log of the e2e cluster (`$E2E_STATE/logs/audit.log`).
    pub fn from_env(users: &[&str]) -> anyhow::Result<Self> {
        let state = std::env::var("E2E_STATE").map_err(|_| anyhow::anyhow!("E2E_STATE (e2e/scripts/env.sh)"))?;
        Self::open(Path::new(&state).join("logs/audit.log"), users)
    }

    /// Reads what was logged since the last poll. When the API server rotated the log
    /// (`--audit-log-maxsize`), the rest of the rotated file is read first, then the new one.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        let meta = std::fs::metadata(&self.path)?;
        if meta.ino() != self.inode {
            if let Some(rotated) = self.rotated()? {
                self.read_from(&rotated)?;
            }
            self.inode = meta.ino();
            self.offset = 0;
            self.partial.clear();
        }
        let path = self.path.clone();
        self.read_from(&path)
    }

    /// The backup the API server renamed our file to (same inode), if it is still there.
    fn rotated(&self) -> anyhow::Result<Option<PathBuf>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.metadata().map(|m| m.ino()).ok() == Some(self.inode) {
                return Ok(Some(entry.path()));
            }
        }
        Ok(None)
    }

    fn read_from(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = std::mem::take(&mut self.partial);
        let read = file.read_to_end(&mut bytes)?;
        self.offset += read as u64;
        // A line still being written stays for the next poll.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        self.partial = bytes.split_off(complete);
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else { continue };
            self.take(line);
        }
        Ok(())
    }

    /// Keeps the line when it is a request of one of `users` not seen yet.
    fn take(&mut self, line: &str) {
        if !self.users.iter().any(|u| line.contains(u.as_str())) {
            return;
        }
        if let Some(r) = parse_line(line)
            && self.seen.insert(r.id.clone())
        {
            self.requests.push(r);
        }
    }

    /// Requests of `user` received in `[from, to)`.
    pub fn window<'a>(&'a self, user: &'a str, from: Timestamp, to: Timestamp) -> impl Iterator<Item = &'a Request> {
        self.requests.iter().filter(move |r| r.user == user && r.received >= from && r.received < to)
    }

    /// When `user` last sent a request other than leader election.
    pub fn last_activity(&self, user: &str) -> Option<Timestamp> {
        self.requests.iter().filter(|r| r.user == user && !r.is_leader_election()).map(|r| r.received).max()
    }
}

/// Requests counted by verb and by `verb resource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Every request, leader election included.
    pub total: u64,
    /// Lease requests (leader election), in `total`.
    pub leader_election: u64,
    /// `total` without leader election: the requests the work itself caused.
    pub workload: u64,
    /// Writes among `workload`.
    pub writes: u64,
    /// `workload` by verb.
    pub by_verb: BTreeMap<String, u64>,
    /// `workload` by `verb resource`.
    pub by_resource: BTreeMap<String, u64>,
}

impl Counts {
    pub fn of<'a>(requests: impl IntoIterator<Item = &'a Request>) -> Self {
        let mut c = Counts::default();
        for r in requests {
            c.total += 1;
            if r.is_leader_election() {
                c.leader_election += 1;
                continue;
            }
            c.workload += 1;
            if r.is_write() {
                c.writes += 1;
            }
            *c.by_verb.entry(r.verb.clone()).or_default() += 1;
            *c.by_resource.entry(format!("{} {}", r.verb, r.resource)).or_default() += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: &str = "system:serviceaccount:argo-rollouts:argo-rollouts";

    fn line(id: &str, stage: &str, verb: &str, resource: &str, sub: Option<&str>, at: &str) -> String {
        let mut object = serde_json::json!({"resource": resource, "namespace": "peers-0000",
            "name": "app-00001-6d4f", "apiGroup": "apps", "apiVersion": "v1"});
        if let Some(s) = sub {
            object["subresource"] = s.into();
        }
        serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": id, "stage": stage, "requestURI": "/apis/apps/v1/namespaces/peers-0000/replicasets",
            "verb": verb, "user": {"username": SA, "groups": ["system:serviceaccounts"]},
            "sourceIPs": ["127.0.0.1"], "userAgent": "rollouts-controller/v1.10.2", "objectRef": object,
            "responseStatus": {"metadata": {}, "code": 201},
            "requestReceivedTimestamp": at, "stageTimestamp": at})
        .to_string()
    }

    #[test]
    fn parses_an_audit_line() {
        let r = parse_line(&line(
            "a1",
            "ResponseComplete",
            "update",
            "rollouts",
            Some("status"),
            "2026-11-29T10:00:00.123456Z",
        ))
        .unwrap();
        assert_eq!((r.verb.as_str(), r.resource.as_str(), r.user.as_str()), ("update", "rollouts/status", SA));
        assert_eq!((r.namespace.as_str(), r.name.as_str(), r.code), ("peers-0000", "app-00001-6d4f", 201));
        assert_eq!(r.received, "2026-11-29T10:00:00.123456Z".parse::<Timestamp>().unwrap());
        assert!(r.is_write() && !r.is_leader_election());
        assert_eq!(parse_line("not json"), None);
        assert_eq!(parse_line("{\"kind\":\"Event\"}"), None, "fields missing: not a request");
        // A non-resource request (no objectRef) still counts.
        let nr =
            r#"{"auditID":"x","verb":"get","user":{"username":"u"},"requestReceivedTimestamp":"2026-11-29T10:00:00Z"}"#;
        assert_eq!(parse_line(nr).unwrap().resource, "");
    }

    #[test]
    fn follows_the_log_once_per_request_across_a_rotation() {
        let dir = std::env::temp_dir().join(format!("phaseloop-audit-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let other = line("o1", "ResponseComplete", "get", "pods", None, "2026-11-29T10:00:00Z")
            .replace(SA, "system:serviceaccount:phaseloop-system:phaseloop");
        std::fs::write(
            &path,
            format!("{}\n", line("old", "ResponseComplete", "get", "rollouts", None, "2026-11-29T09:00:00Z")),
        )
        .unwrap();
        let mut log = AuditLog::open(&path, &[SA]).unwrap();
        // A watch (started, later completed: one request), a write, a Lease renewal, another
        // user's request, and a line cut in the middle by the poll.
        let watch_start = line("w1", "ResponseStarted", "watch", "replicasets", None, "2026-11-29T10:00:01Z");
        let watch_end = line("w1", "ResponseComplete", "watch", "replicasets", None, "2026-11-29T10:00:01Z");
        let create = line("c1", "ResponseComplete", "create", "replicasets", None, "2026-11-29T10:00:02Z");
        let lease = line("l1", "ResponseComplete", "update", "leases", None, "2026-11-29T10:00:03Z");
        let cut = line("p1", "ResponseComplete", "patch", "rollouts", Some("status"), "2026-11-29T10:00:04Z");
        let (head, tail) = cut.split_at(40);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        use std::io::Write;
        write!(f, "{watch_start}\n{create}\n{other}\n{lease}\n{head}").unwrap();
        log.poll().unwrap();
        assert_eq!(log.requests.len(), 3, "the old line is not read; the cut one waits");
        writeln!(f, "{tail}\n{watch_end}").unwrap();
        // Rotation: the file is renamed, a new one started.
        std::fs::rename(&path, dir.join("audit-2026-11-29T10-00-05.000.log")).unwrap();
        writeln!(f, "{}", line("r1", "ResponseComplete", "delete", "replicasets", None, "2026-11-29T10:00:05Z"))
            .unwrap();
        drop(f);
        std::fs::write(
            &path,
            format!("{}\n", line("n1", "ResponseComplete", "list", "services", None, "2026-11-29T10:00:06Z")),
        )
        .unwrap();
        log.poll().unwrap();
        let ids: Vec<&str> = log.requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["w1", "c1", "l1", "p1", "r1", "n1"]);

        let from: Timestamp = "2026-11-29T10:00:01Z".parse().unwrap();
        let to: Timestamp = "2026-11-29T10:00:06Z".parse().unwrap();
        let c = Counts::of(log.window(SA, from, to));
        assert_eq!((c.total, c.leader_election, c.workload, c.writes), (5, 1, 4, 3));
        assert_eq!(
            c.by_verb,
            BTreeMap::from([("create".into(), 1), ("delete".into(), 1), ("patch".into(), 1), ("watch".into(), 1)])
        );
        assert_eq!(c.by_resource.get("patch rollouts/status"), Some(&1));
        assert_eq!(log.last_activity(SA), Some("2026-11-29T10:00:06Z".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
