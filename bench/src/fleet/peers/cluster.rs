//! The cluster between runs: the benchmark's namespaces deleted, and kwok nodes added (and
//! removed after) until it holds every pod at once.

use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;

use super::{EXTRA_NODE_PREFIX, LABEL, Observer, progress};

/// Deletes the benchmark's namespaces and waits until they and their pods are gone.
pub async fn clean(client: &Client, observer: &Observer) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ours = |n: &Namespace| n.name_any().starts_with("peers-");
    for n in namespaces.list(&ListParams::default()).await?.items.iter().filter(|n| ours(n)) {
        let _ = namespaces.delete(&n.name_any(), &DeleteParams::background()).await;
    }
    let until = Instant::now() + Duration::from_secs(1800);
    loop {
        let left = namespaces.list(&ListParams::default()).await?.items.iter().filter(|n| ours(n)).count();
        if left == 0 && observer.pods() == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{left} namespaces and {} pods of the benchmark still there after 30 minutes", observer.pods());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Adds kwok nodes (same as `kwok-node-0`) until the cluster holds `pods` pods at once.
pub(super) async fn ensure_capacity(client: &Client, pods: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("pods"))
            .and_then(|q| count(&q.0))
            .unwrap_or(0)
    };
    let have: usize = nodes.list(&ListParams::default()).await?.items.iter().map(capacity).sum();
    if have >= pods {
        return Ok(());
    }
    let per_node = 5000;
    for i in 1..=(pods - have).div_ceil(per_node) {
        let name = format!("{EXTRA_NODE_PREFIX}{i}");
        let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                                    "type": "kwok", LABEL: "node"}}}))?;
        let _ = nodes.create(&PostParams::default(), &node).await;
        // kwok fills in a new node's status until it is Ready (1M pods); the capacity is set after.
        let ready = |n: &Node| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let until = Instant::now() + Duration::from_secs(60);
        while !nodes.get(&name).await.is_ok_and(|n| ready(&n)) {
            anyhow::ensure!(Instant::now() < until, "kwok did not make node {name} Ready within 60s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let status = json!({"status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": per_node.to_string()},
                                       "capacity": {"cpu": "32", "memory": "256Gi", "pods": per_node.to_string()}}});
        nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        progress(&format!("added kwok node {name} ({per_node} pods)"));
    }
    Ok(())
}

/// A count as a Kubernetes quantity writes it (`5000`, `5k`, `1M`).
fn count(q: &str) -> Option<usize> {
    let (digits, factor) = match q.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match q.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (q, 1),
        },
    };
    digits.parse::<usize>().ok().map(|n| n * factor)
}

pub(super) async fn remove_extra_nodes(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes.list(&ListParams::default().labels(&format!("{LABEL}=node"))).await?.items {
        nodes.delete(&n.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_capacity_reads_quantities() {
        assert_eq!(
            (count("5k"), count("5000"), count("1M"), count("x")),
            (Some(5000), Some(5000), Some(1_000_000), None)
        );
    }
}
