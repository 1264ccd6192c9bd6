//! A PostgreSQL cluster of a test's own: for tests that kill the database,
//! or that hold what the whole cluster shares (an open transaction holds
//! back every database's event horizon) and must not disturb other tests.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::harness::free_port;

/// A PostgreSQL cluster of the test's own in a temporary directory, on a
/// free port, trust authentication; stopped and deleted when dropped.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// The newest PostgreSQL server binaries on this machine (Debian layout,
/// `/usr/lib/postgresql/VERSION/bin`), or those on `PATH`.
fn postgres_bin() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => {
            let output = Command::new("pg_config")
                .arg("--bindir")
                .output()
                .expect("this test needs PostgreSQL's server tools (initdb, pg_ctl)");
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgCluster {
    pub fn create() -> PgCluster {
        Self::sweep_leftovers();
        let dir =
            std::env::temp_dir().join(format!("kl_cluster_{}_{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let cluster = PgCluster {
            dir,
            bin: postgres_bin(),
            port: free_port(),
        };
        if running_as_root() {
            // initdb refuses root: the cluster belongs to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let initdb = cluster.bin.join("initdb");
        cluster.run(
            &initdb,
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster
    }

    /// Stop and delete the clusters of test processes that are gone (killed
    /// before their guard could run).
    fn sweep_leftovers() {
        let entries = std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("kl_cluster_")
                .and_then(|rest| rest.split('_').next())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                drop(PgCluster {
                    dir: entry.path(),
                    bin: postgres_bin(),
                    port: 0,
                });
            }
        }
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Run a PostgreSQL tool, as `postgres` when the test runs as root.
    fn run(&self, tool: &Path, args: &[&str]) {
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool);
            command
        } else {
            Command::new(tool)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            tool.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        self.run(&self.bin.join("pg_ctl"), &all);
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.pg_ctl(&["-o", &options, "-l", &log, "-w", "-t", "30", "start"]);
    }

    /// A fast shutdown: connections are cut, as when a database goes away.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"]);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            Command::new(pg_ctl)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
