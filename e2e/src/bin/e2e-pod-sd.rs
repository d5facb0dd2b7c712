//! Pod discovery for the real node's Prometheus. Debian's Prometheus is built without Kubernetes
//! service discovery, so this does its `role: pod` part: it watches the pods of one node and
//! writes Prometheus file_sd targets (`--out`, replaced atomically on every change) for those
//! annotated `prometheus.io/scrape: "true"`, at `<pod IP>:<prometheus.io/port>`, labelled
//! namespace, pod, app (`app.kubernetes.io/name`) and version (`app.kubernetes.io/version`), as a
//! cluster's Prometheus relabels them. Prometheus (inside the node's network namespace) does the
//! scraping itself; this process only talks to the API server.

use std::{collections::BTreeMap, path::PathBuf};

use clap::Parser;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Only pods bound to this node.
    #[arg(long)]
    node: String,
    /// The file_sd file to write.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", args.node));
    let (store, writer) = reflector::store();
    let stream = watcher(pods, config).default_backoff().reflect(writer).applied_objects();
    futures::pin_mut!(stream);
    write(&args.out, &store.state())?; // no targets until the first pod
    let mut last = String::new();
    loop {
        // Every event (or a re-list) rewrites the whole file from the store, when it changed.
        stream.try_next().await?;
        let text = targets(&store.state());
        if text != last {
            write_text(&args.out, &text)?;
            last = text;
        }
    }
}

fn targets(pods: &[std::sync::Arc<Pod>]) -> String {
    let mut groups = Vec::new();
    for p in pods {
        let ann = p.annotations();
        if ann.get("prometheus.io/scrape").map(String::as_str) != Some("true")
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(status) = &p.status else { continue };
        let (Some(ip), Some("Running")) = (&status.pod_ip, status.phase.as_deref()) else { continue };
        let port = ann.get("prometheus.io/port").cloned().unwrap_or_else(|| "80".into());
        let labels = p.labels();
        let mut l = BTreeMap::from([
            ("namespace".to_string(), p.namespace().unwrap_or_default()),
            ("pod".to_string(), p.name_any()),
        ]);
        if let Some(app) = labels.get("app.kubernetes.io/name") {
            l.insert("app".into(), app.clone());
        }
        if let Some(version) = labels.get("app.kubernetes.io/version") {
            l.insert("version".into(), version.clone());
        }
        groups.push(json!({"targets": [format!("{ip}:{port}")], "labels": l}));
    }
    groups.sort_by_key(|g| g["targets"][0].as_str().unwrap_or_default().to_string());
    serde_json::to_string_pretty(&groups).expect("targets serialize")
}

fn write(out: &PathBuf, pods: &[std::sync::Arc<Pod>]) -> anyhow::Result<()> {
    write_text(out, &targets(pods))
}

fn write_text(out: &PathBuf, text: &str) -> anyhow::Result<()> {
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}
