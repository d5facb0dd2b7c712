//! The README's quick tour, played as printed: the shell block under "Quick tour" is taken from
//! README.md and run line by line with `bash -e -o pipefail`, so the tour cannot drift from what
//! phaseloop does. It starts the local control plane itself (`make cluster-up`), runs the
//! operator with `make run &` and stops both, so run-e2e.sh runs it before the suite starts its
//! cluster, and only when none is running; run it alone with `E2E_TEST=tour make e2e`.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use phaseloop_e2e::repo_root;

/// Longer than the tour's own waits add up to (each `kubectl wait` has its timeout).
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// The first shell block after the "Quick tour" heading.
fn tour(readme: &str) -> String {
    let section = &readme[readme.find("## Quick tour").expect("README has a Quick tour")..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let len = section[start..].find("\n```").expect("the block ends");
    section[start..start + len].to_string() + "\n"
}

#[test]
#[ignore = "starts and stops the local control plane itself: run-e2e.sh runs it when none is up"]
fn the_readme_tour_plays_as_printed() {
    let root = repo_root();
    let script = tour(&std::fs::read_to_string(root.join("README.md")).unwrap());
    assert!(script.starts_with("make cluster-up"), "the tour starts the cluster:\n{script}");
    assert!(script.trim_end().ends_with("make cluster-down"), "the tour stops the cluster:\n{script}");
    let state = std::env::var("E2E_STATE").unwrap_or_else(|_| root.join("target/e2e-cluster").display().to_string());
    std::fs::create_dir_all(format!("{state}/logs")).unwrap();
    let path = format!("{state}/tour.sh");
    std::fs::write(&path, &script).unwrap();

    // -m: job control, as in the terminal the tour is written for (`kill %1` stops the whole
    // `make run` job); -x: every command in the log, as it ran. A process group of its own, so
    // that nothing it started outlives a failure.
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["-m", "-e", "-x", "-o", "pipefail", &path])
        .current_dir(&root)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Whatever is left of the job (an operator after a failed line), then the cluster. `--`: without
    // it, kill takes `-<pgid>` for an option, signals nothing and exits 0, and the readers below
    // wait for ever on the pipes the job still holds.
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    std::fs::write(format!("{state}/logs/tour.log"), format!("{stdout}\n--- stderr (bash -x) ---\n{stderr}")).unwrap();
    let ok = status.is_some_and(|s| s.success());
    if !ok {
        let _ = Command::new("make").arg("cluster-down").current_dir(&root).status();
    }
    let tail: String =
        stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(ok, "the tour failed ({status:?}) after {:?}; log in {state}/logs/tour.log:\n{tail}", started.elapsed());

    // What the printed lines print: the scaling decision and the DORA keys.
    assert!(stdout.contains("\"desiredReplicas\":5"), "the scaling status:\n{stdout}");
    for key in ["phaseloop_dora_deployments_total", "phaseloop_dora_lead_time_seconds"] {
        assert!(stdout.contains(key), "{key} on /metrics:\n{stdout}");
    }
    println!("FIGURE README tour: played as printed in {:.0}s", started.elapsed().as_secs_f64());
}

#[test]
fn the_tour_is_the_first_shell_block_of_its_section() {
    let readme = "# x\n```bash\nno\n```\n## Quick tour\ntext\n```bash\nmake cluster-up\nmake cluster-down\n```\n```bash\nlater\n```\n";
    assert_eq!(tour(readme), "make cluster-up\nmake cluster-down\n");
}
