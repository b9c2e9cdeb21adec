//! Every command, flag and `EVENTSTREAM_*` variable the README and the docs name exists: each
//! `eventstream SUB [SUBSUB] ... --flag` in a code span or block is checked against that
//! command's `--help`, and each variable against the `--help` of every command or, for the few
//! read elsewhere (logging, build, scripts), against the sources that read it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents users read.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for dir in ["docs", "alerts/runbooks", "alerts"] {
        let mut md: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        md.sort();
        files.extend(md);
    }
    files.push(root().join("k8s/statefulset.yaml"));
    files
}

/// Code in a document: fenced blocks and inline spans (the whole file for YAML).
fn code_of(path: &Path, text: &str) -> Vec<String> {
    if path.extension().is_some_and(|x| x == "yaml") {
        return vec![text.to_owned()];
    }
    let mut out = Vec::new();
    let mut in_block = false;
    let mut block = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            if in_block {
                out.push(std::mem::take(&mut block));
            }
            in_block = !in_block;
            continue;
        }
        if in_block {
            block.push_str(line);
            block.push('\n');
        } else {
            let parts: Vec<&str> = line.split('`').collect();
            out.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
        }
    }
    out
}

/// `--help` of `eventstream ARGS`, cached.
struct Help(BTreeMap<Vec<String>, Option<String>>);

impl Help {
    fn of(&mut self, args: &[String]) -> Option<String> {
        self.0
            .entry(args.to_vec())
            .or_insert_with(|| {
                let out = Command::new(EXE).args(args).arg("--help").output().ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })
            .clone()
    }

    /// The subcommands `eventstream ARGS` lists.
    fn subcommands(&mut self, args: &[String]) -> BTreeSet<String> {
        let Some(help) = self.of(args) else {
            return BTreeSet::new();
        };
        help.split("Commands:")
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .skip(1)
                    .take_while(|l| l.starts_with("  "))
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|w| *w != "help")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Logical lines (a trailing `\` continues the line).
fn lines(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in code.lines() {
        match l.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(l);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The commands a line runs: `eventstream` (or a path ending in it) and the words after it, up
/// to a shell separator.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_start_matches(['(', '"', '\'', '$']);
        // A path ending in `eventstream` after a flag is that flag's value (`--data-dir
        // /var/lib/eventstream`), not the binary.
        let a_value = i > 0 && words[i - 1].starts_with("--");
        if (w == "eventstream" || w.ends_with("/eventstream")) && !a_value {
            let rest: Vec<String> = words[i + 1..]
                .iter()
                .take_while(|w| {
                    !matches!(**w, "|" | "||" | "&&" | ";" | "#") && !w.starts_with('#')
                })
                .map(|w| {
                    w.trim_end_matches([';', ')', '"', '\'', ',', '.'])
                        .to_owned()
                })
                .collect();
            out.push(rest);
        }
    }
    out
}

#[test]
fn every_command_and_flag_in_the_docs_exists() {
    let mut help = Help(BTreeMap::new());
    let top = help.subcommands(&[]);
    assert!(top.contains("node") && top.contains("bench"), "{top:?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        for code in code_of(&doc, &text) {
            for line in lines(&code) {
                for words in invocations(&line) {
                    let Some(sub) = words.first() else { continue };
                    if !top.contains(sub) {
                        if sub.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                            && !sub.is_empty()
                            && line.trim_start().starts_with("eventstream")
                        {
                            problems.push(format!("{name}: `eventstream {sub}` is no command"));
                        }
                        continue;
                    }
                    let mut path = vec![sub.clone()];
                    let subs = help.subcommands(&path);
                    if !subs.is_empty() {
                        match words.get(1) {
                            Some(s) if subs.contains(s) => path.push(s.clone()),
                            Some(s)
                                if !s.starts_with('-')
                                    && !s.starts_with('.')
                                    && !s.contains('|')
                                    && !s.contains('[') =>
                            {
                                problems.push(format!(
                                    "{name}: `eventstream {sub} {s}` is no command ({subs:?})"
                                ));
                                continue;
                            }
                            _ => continue,
                        }
                    }
                    let Some(text) = help.of(&path) else {
                        problems.push(format!(
                            "{name}: `eventstream {}` has no --help",
                            path.join(" ")
                        ));
                        continue;
                    };
                    for w in &words[path.len()..] {
                        let Some(flag) = w.strip_prefix("--") else {
                            continue;
                        };
                        let flag = flag.split('=').next().unwrap_or_default();
                        if flag.is_empty()
                            || !flag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        {
                            continue;
                        }
                        checked += 1;
                        if !text.contains(&format!("--{flag} "))
                            && !text.contains(&format!("--{flag}\n"))
                            && !text.contains(&format!("--{flag} <"))
                            && !text.contains(&format!("--{flag}="))
                        {
                            problems.push(format!(
                                "{name}: `eventstream {} --{flag}`: no such flag",
                                path.join(" ")
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} flags found in the docs: is the scan broken?"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every `--help` text of the CLI, concatenated.
fn all_help(help: &mut Help) -> String {
    let mut text = String::new();
    for sub in help.subcommands(&[]) {
        let path = vec![sub.clone()];
        let subs = help.subcommands(&path);
        text.push_str(&help.of(&path).unwrap_or_default());
        for s in subs {
            text.push_str(&help.of(&[sub.clone(), s]).unwrap_or_default());
        }
    }
    text
}

/// Every source file that may read an environment variable.
fn sources() -> String {
    let mut text = String::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "docs" {
                    stack.push(p);
                }
            } else if ["rs", "sh", "py"]
                .iter()
                .any(|x| p.extension().is_some_and(|e| e == *x))
                || name == "Dockerfile"
            {
                text.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    text
}

#[test]
fn every_variable_in_the_docs_exists() {
    let mut help = Help(BTreeMap::new());
    let help_text = all_help(&mut help);
    let sources = sources();
    let mut problems = BTreeSet::new();
    let mut seen = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("EVENTSTREAM_") {
            let var: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[i + var.len()..];
            // A family named by its prefix (`EVENTSTREAM_TLS_*`).
            if var.ends_with('_') {
                continue;
            }
            seen += 1;
            let in_help = help_text.contains(&format!("[env: {var}="));
            // Read by code rather than by a flag: named in a source other than this test.
            let read = sources.matches(&format!("\"{var}\"")).count() > 0
                || sources.contains(&format!("${var}"))
                || sources.contains(&format!("${{{var}"))
                || sources.contains(&format!("{var}="));
            if !in_help && !read {
                problems.insert(format!("{name}: {var} is read by nothing"));
            }
        }
    }
    assert!(
        seen > 10,
        "only {seen} variables found in the docs: is the scan broken?"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
