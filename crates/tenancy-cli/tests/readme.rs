//! The README is a test: the shell blocks of its walkthrough (from "Quickstart" to
//! "Tenant migrations") run in order, in one `bash`, on a fresh folder, against the real
//! binary — on SQLite, and on PostgreSQL `schema` mode with the README's PostgreSQL block
//! after them. Every command must succeed, every `curl` must answer 2xx/3xx unless its
//! line says which status it expects (`# 403 tenant_conflict`), and on SQLite the outputs
//! the README shows (`# {…}` after a command; `…` stands for anything) must appear, in
//! order.
//!
//! The only changes made to the text: `cargo run --release --` and
//! `$PWD/target/release/tenancy` become the binary under test, and the port 8080 a free
//! one, so that runs cannot collide.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tenancy/tests/common/pg.rs"]
mod pg;

/// A generous bound for the whole walkthrough.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A fenced shell block of the README: its first line's number and its lines.
struct Block {
    line: usize,
    lines: Vec<String>,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap()
}

/// The ```` ```sh ```` blocks between the heading that starts with `from` and the next
/// one that starts with `to`.
fn sh_blocks(readme: &str, from: &str, to: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut inside = false;
    let mut current: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with(from) {
            inside = true;
        } else if line.starts_with(to) {
            inside = false;
        }
        match &mut current {
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::replace(
                    block,
                    Block {
                        line: 0,
                        lines: Vec::new(),
                    },
                ));
                current = None;
            }
            Some(block) => block.lines.push(line.to_owned()),
            None if inside && line.trim_end() == "```sh" => {
                current = Some(Block {
                    line: i + 2,
                    lines: Vec::new(),
                });
            }
            None => {}
        }
    }
    blocks
}

/// The status a command line says it answers: a trailing `# 401` or `# 403 code`.
fn expected_status(line: &str) -> Option<u16> {
    let (_, comment) = line.split_once(" # ")?;
    let status: u16 = comment.split_whitespace().next()?.parse().ok()?;
    (100..600).contains(&status).then_some(status)
}

/// Whether a comment right after a command shows its output (JSON, or a table's header
/// row) rather than explaining the next command.
fn looks_like_output(text: &str) -> bool {
    text.starts_with('{')
        || text.starts_with('[')
        || text
            .split_whitespace()
            .next()
            .is_some_and(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase()))
}

/// The outputs the README shows: runs of `# …` lines right after a command line (a
/// continuation starts with `#  `), joined.
fn expected_outputs(blocks: &[Block]) -> Vec<(usize, String)> {
    let mut outputs: Vec<(usize, String)> = Vec::new();
    for block in blocks {
        let mut after_command = false;
        let mut open = false;
        for (i, line) in block.lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if let Some(text) = trimmed.strip_prefix("# ") {
                if after_command && !open && looks_like_output(text) {
                    outputs.push((block.line + i, text.to_owned()));
                    open = true;
                } else if open && text.starts_with(' ') {
                    outputs.last_mut().unwrap().1.push_str(text.trim_start());
                } else if open {
                    // The next line of a table: its own output.
                    outputs.push((block.line + i, text.to_owned()));
                }
                continue;
            }
            open = false;
            after_command = !trimmed.is_empty() && !trimmed.starts_with('#');
        }
    }
    outputs
}

/// Where the output line `pattern` — literal text, `…` for anything, white space for any
/// run of white space (tables) — first appears in `haystack`: the end of the match.
fn matches_at(haystack: &str, pattern: &str) -> Option<usize> {
    let regex = pattern
        .split('…')
        .map(|part| {
            part.split_whitespace()
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(r"\s+")
        })
        .collect::<Vec<_>>()
        .join("(?s:.*?)");
    let regex = regex::Regex::new(&regex).unwrap();
    regex.find(haystack).map(|m| m.end())
}

/// The script: a `curl` that records each status (and whether it was the expected one),
/// then the blocks, with the binary and the port substituted.
fn script(blocks: &[Block], bin: &Path, port: u16, statuses: &Path) -> String {
    let mut script = format!(
        "set -euo pipefail\n\
         shopt -s expand_aliases\n\
         curl() {{\n\
           local out code rc=0\n\
           out=$(command curl -w '\\n%{{http_code}}' \"$@\") || rc=$?\n\
           code=${{out##*$'\\n'}}\n\
           printf '%s' \"${{out%$'\\n'*}}\"\n\
           if [ -n \"${{README_LINE:-}}\" ]; then\n\
             echo \"$code ${{EXPECT_STATUS:-2xx}} $README_LINE\" >> '{}'\n\
           fi\n\
           return $rc\n\
         }}\n",
        statuses.display()
    );
    let bin = bin.display().to_string();
    for block in blocks {
        for (i, line) in block.lines.iter().enumerate() {
            let mut line = line
                .replace("cargo run --release --", &format!("'{bin}'"))
                .replace("$PWD/target/release/tenancy", &bin)
                .replace(":8080", &format!(":{port}"));
            let number = block.line + i;
            if line.trim_start().starts_with("curl ") {
                let indent = line.len() - line.trim_start().len();
                // The status a command expects is said on its last line.
                let last = block.lines[i..]
                    .iter()
                    .find(|l| !l.trim_end().ends_with('\\'))
                    .unwrap_or(&block.lines[i]);
                let expect = expected_status(last)
                    .map_or_else(String::new, |s| format!("EXPECT_STATUS={s} "));
                line.insert_str(indent, &format!("README_LINE={number} {expect}"));
            }
            script.push_str(&line);
            script.push('\n');
        }
        // A block ends with a newline of output, as in a terminal.
        script.push_str("echo\n");
    }
    script
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Run {
    stdout: String,
    stderr: String,
    ok: bool,
    /// `(status, expected, README line)` of every curl.
    statuses: Vec<(String, String, String)>,
}

/// Runs the blocks in one `bash` in a fresh folder, with `env`; every process it started
/// (the server in the background) is killed at the end.
fn run(blocks: &[Block], env: &[(&str, String)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let statuses = dir.path().join("statuses");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tenancy"));
    let port = free_port();
    let text = script(blocks, &bin, port, &statuses);
    std::fs::write("/tmp/readme-script.sh", &text).unwrap();
    // Files, not pipes: the server the walkthrough leaves in the background would hold a
    // pipe open after bash ends.
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new("bash");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("-c")
        .arg(&text)
        .current_dir(&work)
        .env("TENANCY_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().expect("bash");
    let group = format!("-{}", child.id());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the walkthrough started in the background (the server), and bash itself if
    // it ran past the deadline.
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    assert!(
        status.is_some(),
        "the walkthrough ran past {TIMEOUT:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let statuses = std::fs::read_to_string(&statuses)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(str::to_owned);
            (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            )
        })
        .collect();
    Run {
        stdout,
        stderr,
        ok: status.is_some_and(|s| s.success()),
        statuses,
    }
}

fn check(run: &Run, what: &str) {
    assert!(
        run.ok,
        "{what}: the walkthrough failed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout, run.stderr
    );
    assert!(!run.statuses.is_empty(), "{what}: no curl ran");
    for (status, expected, line) in &run.statuses {
        let fine = if expected == "2xx" {
            status.starts_with('2') || status.starts_with('3')
        } else {
            status == expected
        };
        assert!(
            fine,
            "{what}: README line {line} answered {status}, expected {expected}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        );
    }
}

fn walkthrough() -> Vec<Block> {
    let blocks = sh_blocks(&readme(), "## Quickstart", "## Tenant migrations");
    assert!(blocks.len() >= 4, "the walkthrough has its four blocks");
    blocks
}

#[test]
fn the_readme_walkthrough_runs_on_sqlite_and_shows_what_it_says() {
    let blocks = walkthrough();
    let run = run(&blocks, &[]);
    check(&run, "SQLite");
    let mut from = 0;
    for (line, expected) in expected_outputs(&blocks) {
        match matches_at(&run.stdout[from..], &expected) {
            Some(end) => from += end,
            None => panic!(
                "README line {line} shows {expected:?}, which the walkthrough did not print (after byte {from})\n--- stdout\n{}",
                run.stdout
            ),
        }
    }
}

#[test]
fn the_readme_walkthrough_runs_on_postgresql_schema_mode() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = runtime.block_on(pg::TestDb::create()) else {
        return;
    };
    let mut blocks = walkthrough();
    blocks.extend(sh_blocks(&readme(), "## PostgreSQL", "### TLS"));
    let run = run(
        &blocks,
        &[
            ("TENANCY_CATALOG_URL", db.url.clone()),
            ("TENANCY_STORE_URL", db.url.clone()),
            ("TENANCY_STORE_NAME", "pg".to_owned()),
            ("TENANCY_STORE_DATA_ROLE", format!("{}_data", db.prefix)),
            ("TENANCY_STORE_DATABASE_PREFIX", db.prefix.clone()),
            ("TENANCY_DEFAULT_STORE", "pg".to_owned()),
            ("TENANCY_DEFAULT_MODE", "schema".to_owned()),
        ],
    );
    check(&run, "PostgreSQL");
    // The tenants are where the README says: the walkthrough's in schema mode, and the
    // PostgreSQL block's in the mode and store each line names.
    for pattern in [
        r#""slug":"ironforge","name":"ironforge","status":"active","store":"pg","mode":"schema""#,
        "created acme (… database mode in store pg) at schema version 3",
        "created beta (… schema mode in store pg) at schema version 3",
        "created gamma (… shared mode in store pg) at schema version 3",
        "created local (… database mode in store default) at schema version 3",
    ] {
        assert!(
            matches_at(&run.stdout, pattern).is_some(),
            "{pattern:?} is not in the output\n{}",
            run.stdout
        );
    }
}

#[test]
fn expected_outputs_are_read_from_comment_lines_after_commands() {
    let blocks = sh_blocks(
        "## Quickstart\n```sh\n# a comment first\ncurl -s x   # 401\n# {\"a\":1,\n#  \"b\":2}\n\ntenancy tenant list\n# SLUG  NAME\n# one   One\n```\n## Tenant migrations\n```sh\nnot this\n```\n",
        "## Quickstart",
        "## Tenant migrations",
    );
    assert_eq!(blocks.len(), 1);
    assert_eq!(expected_status(&blocks[0].lines[1]), Some(401));
    let outputs: Vec<String> = expected_outputs(&blocks)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert_eq!(outputs, ["{\"a\":1,\"b\":2}", "SLUG  NAME", "one   One"]);
    assert!(matches_at("xx {\"a\":1,\"b\":2} yy", "{\"a\":1,…}").is_some());
    assert!(matches_at("SLUG   NAME\n", "SLUG NAME").is_some());
    assert!(matches_at("{\"a\":2}", "{\"a\":1…}").is_none());
    assert!(matches_at("one two", "one  three").is_none());
}
