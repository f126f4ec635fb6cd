//! The architecture check of `cargo xtask test`: reads the `use` declarations and the
//! `crate::`/`super::`/`self::`/child-module paths of a tree of .rs files, turns them into a
//! graph of modules, and checks it.
//!
//! - xtask/src: no cycle among its modules (each top-level file or folder, and inside `lab` each
//!   of its direct submodules).
//! - agent/src: the stage order of [`AGENT_STAGES`]: a stage uses `model`, `sys`, itself and the
//!   stages before it, never one after it; see [`agent_may_use`].
//!
//! It reads text, not resolved names: a path counts where it is written (`use` lines, and paths
//! in code that start with `crate`, `super`, `self` or a child module). Comments and string
//! literals are skipped. Test modules (`#[cfg(test)] mod x { ... }` and `#[cfg(test)] mod x;`)
//! are left out: the rules are about the code that ships, and a test may build its fixtures
//! from a later stage.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::{paths, support::tally::Tally, ui};

/// The agent's stages, in order: each may use the ones before it, never one after it.
pub const AGENT_STAGES: &[&str] = &["observe", "reconcile", "reload", "state", "export"];
/// Usable by every module of the agent: `model` uses only itself, `sys` only `model` and itself.
const AGENT_BASE: &[&str] = &["model", "sys"];
/// Wiring: `daemon` may use anything but `cli`; `cli`, `lib.rs` and `main.rs` anything.
const AGENT_WIRING: &[&str] = &["daemon", "cli", "lib", "main"];

/// One module path used by a module, where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    /// The module that uses (a graph node, e.g. `fleet` or `lab::scenarios`).
    pub from: String,
    /// The module used (a graph node).
    pub to: String,
    /// The file, relative to the tree's root.
    pub file: PathBuf,
    pub line: usize,
    /// The path as resolved from the crate root, e.g. `crate::lab::guests::Boot`.
    pub path: String,
}

impl std::fmt::Display for Use {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: uses `{}` ({} -> {})",
            self.file.display(),
            self.line,
            self.path,
            self.from,
            self.to
        )
    }
}

/// How module paths map to graph nodes: the first segment, or the first two below a module
/// named in `expand`; the crate root's own items are `root`.
pub struct Nodes<'a> {
    pub expand: &'a [&'a str],
    pub root: &'a str,
}

/// xtask's nodes: top-level modules, and `lab`'s direct submodules.
pub const XTASK_NODES: Nodes<'static> = Nodes {
    expand: &["lab"],
    root: "main",
};
/// The agent's nodes: top-level modules; `crate::x` for an item of lib.rs is `lib`.
pub const AGENT_NODES: Nodes<'static> = Nodes {
    expand: &[],
    root: "lib",
};

impl Nodes<'_> {
    fn node(&self, module: &[String]) -> String {
        match module {
            [] => self.root.to_owned(),
            [first, second, ..] if self.expand.contains(&first.as_str()) => {
                format!("{first}::{second}")
            }
            [first, ..] => first.clone(),
        }
    }
}

/// Every .rs file under `src`, relative to it, with its text (sorted, for stable reports).
pub fn read_tree(src: &Path) -> Result<Vec<(PathBuf, String)>> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, src, out)?;
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.push((path.strip_prefix(src)?.to_path_buf(), text));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(src, src, &mut out)?;
    out.sort();
    Ok(out)
}

/// The module path of a file relative to `src`: `main.rs`/`lib.rs` are the root, `a/mod.rs`
/// and `a.rs` are `a`, `a/b.rs` is `a::b`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    if !(matches!(stem, "mod") || (parts.is_empty() && matches!(stem, "main" | "lib"))) {
        parts.push(stem.to_owned());
    }
    parts
}

/// Every module use between distinct nodes in `files` (relative path, text).
pub fn uses(files: &[(PathBuf, String)], nodes: &Nodes) -> Vec<Use> {
    // Every module a file is, or is in (a folder without mod.rs is one too).
    let known: BTreeSet<Vec<String>> = files
        .iter()
        .flat_map(|(f, _)| {
            let module = module_of(f);
            (0..=module.len()).map(move |n| module[..n].to_vec())
        })
        .collect();
    let tests: BTreeSet<Vec<String>> = files
        .iter()
        .flat_map(|(f, text)| {
            let module = module_of(f);
            test_modules(&tokens(text)).into_iter().map(move |m| {
                let mut path = module.clone();
                path.push(m);
                path
            })
        })
        .collect();
    let mut out = Vec::new();
    for (file, text) in files {
        let module = module_of(file);
        if (0..=module.len()).any(|n| tests.contains(&module[..n])) {
            continue;
        }
        let from = match module.as_slice() {
            [] => file.with_extension("").to_string_lossy().into_owned(),
            m => nodes.node(m),
        };
        for (line, path) in paths_in(text, &module) {
            let target = (0..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|p| known.contains(*p))
                .unwrap_or(&[]);
            let to = nodes.node(target);
            if to != from {
                out.push(Use {
                    from: from.clone(),
                    to,
                    file: file.clone(),
                    line,
                    path: format!("crate::{}", path.join("::")),
                });
            }
        }
    }
    out
}

/// A cycle among the nodes of `uses`, as the uses that close it (`a -> b -> ... -> a`), or None.
pub fn find_cycle(uses: &[Use]) -> Option<Vec<Use>> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Use>> = BTreeMap::new();
    for u in uses {
        edges.entry(&u.from).or_default().entry(&u.to).or_insert(u);
    }
    // Depth-first search; a node met again while on the stack closes a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeMap<&'a str, &'a Use>>,
        stack: &mut Vec<&'a Use>,
        on_stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<Use>> {
        if done.contains(node) {
            return None;
        }
        on_stack.push(node);
        for (&next, &u) in edges.get(node).into_iter().flatten() {
            stack.push(u);
            if let Some(at) = on_stack.iter().position(|&n| n == next) {
                return Some(stack[at..].iter().map(|&u| u.clone()).collect());
            }
            if let Some(cycle) = visit(next, edges, stack, on_stack, done) {
                return Some(cycle);
            }
            stack.pop();
        }
        on_stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for &node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// `a -> b -> a`, then each use that makes an edge of it.
pub fn describe_cycle(cycle: &[Use]) -> String {
    let mut path: Vec<&str> = cycle.iter().map(|u| u.from.as_str()).collect();
    path.extend(cycle.first().map(|u| u.from.as_str()));
    let sites: Vec<String> = cycle.iter().map(Use::to_string).collect();
    format!("cycle {}: {}", path.join(" -> "), sites.join("; "))
}

/// Whether the agent's module `from` may use `to` (both top-level modules of agent/src; `lib`
/// for an item of lib.rs, `main` for main.rs), and why not.
pub fn agent_may_use(from: &str, to: &str) -> Result<(), String> {
    let stage = |m: &str| AGENT_STAGES.iter().position(|&s| s == m);
    let known =
        |m: &str| stage(m).is_some() || AGENT_BASE.contains(&m) || AGENT_WIRING.contains(&m);
    let layout = || {
        format!(
            "the layout is {} (in this order), {} and {}",
            AGENT_STAGES.join(" -> "),
            AGENT_BASE.join(", "),
            AGENT_WIRING.join(", ")
        )
    };
    if !known(from) {
        return Err(format!(
            "`{from}` is no module of the layout ({})",
            layout()
        ));
    }
    if !known(to) {
        return Err(format!("`{to}` is no module of the layout ({})", layout()));
    }
    match (from, to) {
        _ if from == to => Ok(()),
        ("cli" | "lib" | "main", _) => Ok(()),
        ("daemon", "cli") => Err("daemon is wiring for cli, it may not use cli".to_owned()),
        ("daemon", _) => Ok(()),
        (_, "daemon") => Err("only cli (and lib.rs, main.rs) may use daemon".to_owned()),
        ("model", _) => Err("model uses nothing but model".to_owned()),
        ("sys", "model") => Ok(()),
        ("sys", _) => Err("sys uses only model and sys".to_owned()),
        (_, "model" | "sys") => Ok(()),
        (_, "lib") => Err(format!("{from} is a stage: an item of lib.rs is wiring")),
        _ => match (stage(from), stage(to)) {
            (Some(f), Some(t)) if t < f => Ok(()),
            (Some(_), Some(_)) => Err(format!("{to} is a later stage than {from}")),
            _ => Err(format!("{from} is a stage: it may not use {to}")),
        },
    }
}

/// Every use in `uses` that `rule` forbids, with the reason.
pub fn violations(
    uses: &[Use],
    rule: impl Fn(&str, &str) -> Result<(), String>,
) -> Vec<(Use, String)> {
    uses.iter()
        .filter_map(|u| rule(&u.from, &u.to).err().map(|why| (u.clone(), why)))
        .collect()
}

/// xtask's module graph has no cycle.
pub fn check_xtask(src: &Path) -> Result<()> {
    let uses = uses(&read_tree(src)?, &XTASK_NODES);
    match find_cycle(&uses) {
        Some(cycle) => anyhow::bail!("{}", describe_cycle(&cycle)),
        None => Ok(()),
    }
}

/// Every module of agent/src keeps to the stage order.
pub fn check_agent(src: &Path) -> Result<()> {
    let wrong = violations(&uses(&read_tree(src)?, &AGENT_NODES), agent_may_use);
    if wrong.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = wrong.iter().map(|(u, why)| format!("{u}: {why}")).collect();
    anyhow::bail!("{}", lines.join("\n"))
}

/// The suite in `cargo xtask test`: both checks, one tally entry each.
pub fn run(tally: &mut Tally) {
    ui::section("architecture: module graph of xtask/src, stage order of agent/src");
    let root = paths::root();
    tally.record(
        "architecture",
        "xtask/src: no cycle among its modules",
        check_xtask(&root.join("xtask/src")),
    );
    tally.record(
        "architecture",
        "agent/src: every stage uses only model, sys and earlier stages",
        check_agent(&root.join("agent/src")),
    );
}

/// A token of Rust source with comments and literals removed.
#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other(char),
}

/// The tokens of `source` with their line numbers; comments, strings and chars are dropped.
fn tokens(source: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = source.chars().collect();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    let count = |from: usize, to: usize| chars[from..to].iter().filter(|&&c| c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        if let Some(end) = skip_literal(&chars, i) {
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((line, Token::Ident(chars[start..i].iter().collect())));
        } else {
            i += 1;
            let token = match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                ';' => Token::Semi,
                '*' => Token::Star,
                c if c.is_whitespace() => {
                    line += usize::from(c == '\n');
                    continue;
                }
                c => Token::Other(c),
            };
            out.push((line, token));
            continue;
        }
        line += count(start, i.min(chars.len()));
    }
    out
}

/// Whether the `mod` at `i` is preceded by `#[cfg(test)]` (and maybe `pub`).
fn is_cfg_test(tokens: &[(usize, Token)], mut i: usize) -> bool {
    if i > 0 && matches!(&tokens[i - 1].1, Token::Ident(p) if p == "pub") {
        i -= 1;
    }
    let want = ["#", "[", "cfg", "(", "test", ")", "]"];
    i >= want.len()
        && tokens[i - want.len()..i]
            .iter()
            .zip(want)
            .all(|((_, t), w)| match t {
                Token::Ident(s) => s == w,
                Token::Other(c) => w.len() == 1 && w.starts_with(*c),
                _ => false,
            })
}

/// The child modules a file declares `#[cfg(test)] mod x;` (in their own file).
fn test_modules(tokens: &[(usize, Token)]) -> Vec<String> {
    (0..tokens.len())
        .filter(|&i| {
            matches!(&tokens[i].1, Token::Ident(k) if k == "mod") && is_cfg_test(tokens, i)
        })
        .filter(|&i| tokens.get(i + 2).is_some_and(|t| t.1 == Token::Semi))
        .filter_map(|i| match tokens.get(i + 1) {
            Some((_, Token::Ident(name))) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Past the comment, string or char literal at `i`, or None when there is none.
fn skip_literal(chars: &[char], mut i: usize) -> Option<usize> {
    let (c, next) = (chars[i], chars.get(i + 1).copied());
    if c == '/' && next == Some('/') {
        while i < chars.len() && chars[i] != '\n' {
            i += 1;
        }
    } else if c == '/' && next == Some('*') {
        let mut depth = 0;
        while i < chars.len() {
            if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                depth += 1;
                i += 2;
            } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                i += 1;
            }
        }
    } else if let Some(end) = raw_string_end(chars, i) {
        return Some(end);
    } else if c == '"' || (c == 'b' && next == Some('"')) {
        i += if c == 'b' { 2 } else { 1 };
        while i < chars.len() && chars[i] != '"' {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i += 1;
    } else if c == '\'' {
        // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a).
        if next == Some('\\') {
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            i += 1;
        }
    } else {
        return None;
    }
    Some(i)
}

/// The end of a raw (byte) string literal starting at `i` (`r"…"`, `r#"…"#`, `br"…"`).
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i + usize::from(chars.get(i) == Some(&'b'));
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// Where each token is: its module (inline modules included), and whether inside a
/// `#[cfg(test)]` module; and each module's child modules.
struct Scopes {
    children: BTreeMap<Vec<String>, BTreeSet<String>>,
    scope: Vec<Vec<String>>,
    testing: Vec<bool>,
}

fn scopes(tokens: &[(usize, Token)], module: &[String]) -> Scopes {
    let ident = |i: usize| match tokens.get(i) {
        Some((_, Token::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut current = module.to_vec();
    let mut inline: Vec<(Vec<String>, usize, bool)> = Vec::new();
    let mut in_test = false;
    let mut scope = vec![current.clone(); tokens.len()];
    let mut testing = vec![false; tokens.len()];
    let mut depth = 0;
    for (i, (_, token)) in tokens.iter().enumerate() {
        match token {
            Token::Ident(kw) if kw == "mod" => {
                if let Some(name) = ident(i + 1) {
                    children
                        .entry(current.clone())
                        .or_default()
                        .insert(name.to_owned());
                    if tokens.get(i + 2).map(|t| &t.1) == Some(&Token::Open) {
                        inline.push((current.clone(), depth + 1, in_test));
                        in_test |= is_cfg_test(tokens, i);
                        current.push(name.to_owned());
                    }
                }
            }
            Token::Open => depth += 1,
            Token::Close => {
                if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                    (current, _, in_test) = inline.pop().unwrap_or_default();
                }
                depth -= 1;
            }
            _ => {}
        }
        scope[i] = current.clone();
        testing[i] = in_test;
    }
    Scopes {
        children,
        scope,
        testing,
    }
}

/// `path` as written in module `at`, from the crate root; None unless it starts with `crate`,
/// `self`, `super` or a child module of `at`.
fn resolve(
    children: &BTreeMap<Vec<String>, BTreeSet<String>>,
    at: &[String],
    path: &[String],
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" | "super" => at.to_vec(),
        name if children.get(at).is_some_and(|c| c.contains(name)) => at.to_vec(),
        _ => return None,
    };
    let mut rest = path;
    while let Some(seg) = rest.first() {
        match seg.as_str() {
            "crate" if rest.len() == path.len() => {}
            "self" => {}
            "super" => {
                base.pop()?;
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module paths a file of module `module` uses, resolved from the crate root, with the
/// line each is written on: its `use` trees, and paths in code starting with `crate`,
/// `super`, `self` or one of its child modules (`mod x;` or `mod x { ... }`).
fn paths_in(source: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let tokens = tokens(source);
    let ident = |i: usize| match tokens.get(i) {
        Some((_, Token::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let Scopes {
        children,
        scope,
        testing,
    } = scopes(&tokens, module);
    let resolve = |at: &[String], path: &[String]| resolve(&children, at, path);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let line = tokens[i].0;
        if testing[i] {
            i += 1;
            continue;
        }
        if ident(i) == Some("use") {
            let end = (i..tokens.len())
                .find(|&j| tokens[j].1 == Token::Semi)
                .unwrap_or(tokens.len());
            let mut trees = Vec::new();
            use_tree(&tokens[i + 1..end], &[], &mut trees);
            out.extend(
                trees
                    .into_iter()
                    .filter_map(|(l, p)| resolve(&scope[i], &p).map(|p| (l, p))),
            );
            i = end;
            continue;
        }
        let after_sep = i > 0 && tokens[i - 1].1 == Token::PathSep;
        if ident(i).is_some()
            && !after_sep
            && tokens.get(i + 1).map(|t| &t.1) == Some(&Token::PathSep)
        {
            let mut path = Vec::new();
            let mut j = i;
            while let Some(seg) = ident(j) {
                path.push(seg.to_owned());
                if tokens.get(j + 1).map(|t| &t.1) != Some(&Token::PathSep) {
                    break;
                }
                j += 2;
            }
            if let Some(p) = resolve(&scope[i], &path) {
                out.push((line, p));
            }
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// Expands a `use` tree (the tokens between `use` and `;`) into full paths, each with the line
/// its last segment is on: `a::{b::c, d}` gives `a::b::c` and `a::d`.
fn use_tree(tokens: &[(usize, Token)], prefix: &[String], out: &mut Vec<(usize, Vec<String>)>) {
    let mut path = prefix.to_vec();
    let mut line = tokens.first().map_or(0, |t| t.0);
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].1 {
            Token::Ident(s) if s == "as" => {
                i += 2;
                continue;
            }
            Token::Ident(s) => {
                path.push(s.clone());
                line = tokens[i].0;
            }
            Token::Open => {
                // The group up to its matching brace, split at its top-level commas.
                let (mut depth, mut start) = (0, i + 1);
                for j in i..tokens.len() {
                    match tokens[j].1 {
                        Token::Open => depth += 1,
                        Token::Close => depth -= 1,
                        Token::Comma if depth == 1 => {
                            use_tree(&tokens[start..j], &path, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        use_tree(&tokens[start..j], &path, out);
                        break;
                    }
                }
                return;
            }
            Token::PathSep | Token::Star => {}
            Token::Comma | Token::Close | Token::Semi | Token::Other(_) => break,
        }
        i += 1;
    }
    if path.len() > prefix.len() {
        // `a::{self, b}`: the `self` entry is `a` itself.
        if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
            path.pop();
        }
        out.push((line, path));
    } else if !prefix.is_empty() && tokens.iter().any(|t| t.1 == Token::Star) {
        out.push((line, path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(f, t)| (PathBuf::from(f), (*t).to_owned()))
            .collect()
    }

    fn edges(uses: &[Use]) -> BTreeSet<(String, String)> {
        uses.iter()
            .map(|u| (u.from.clone(), u.to.clone()))
            .collect()
    }

    fn edge(from: &str, to: &str) -> (String, String) {
        (from.to_owned(), to.to_owned())
    }

    #[test]
    fn module_paths_of_files() {
        assert!(module_of(Path::new("main.rs")).is_empty());
        assert_eq!(module_of(Path::new("lab/mod.rs")), ["lab"]);
        assert_eq!(
            module_of(Path::new("lab/scenarios/agent.rs")),
            ["lab", "scenarios", "agent"]
        );
        assert_eq!(module_of(Path::new("state.rs")), ["state"]);
    }

    #[test]
    fn resolves_groups_super_self_and_child_modules() {
        let files = tree(&[
            (
                "main.rs",
                "mod a; mod b; mod lab;\nfn main() { lab::main(); }",
            ),
            (
                "a.rs",
                "use crate::{b::x, lab::{scenarios::{self, Y}, image}};\nuse std::fs;",
            ),
            (
                "b.rs",
                "pub fn x() {}\nfn f() { crate::a::g(); let s = \"crate::lab::x\"; }\n// crate::lab",
            ),
            (
                "lab/mod.rs",
                "mod image; mod scenarios;\nfn main() { scenarios::every(); }",
            ),
            (
                "lab/image.rs",
                "use super::Lab;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}",
            ),
            ("lab/scenarios/mod.rs", "mod agent;\nuse super::super::b;"),
            (
                "lab/scenarios/agent.rs",
                "use super::{super::image::K, Scenario};",
            ),
        ]);
        assert_eq!(
            edges(&uses(&files, &XTASK_NODES)),
            BTreeSet::from([
                edge("main", "lab"),
                edge("a", "b"),
                edge("a", "lab::scenarios"),
                edge("a", "lab::image"),
                edge("b", "a"),
                edge("lab", "lab::scenarios"),
                edge("lab::image", "lab"),
                edge("lab::scenarios", "b"),
                edge("lab::scenarios", "lab::image"),
            ])
        );
    }

    #[test]
    fn names_file_line_and_path() {
        let files = tree(&[
            ("main.rs", "mod a; mod b;"),
            ("a.rs", "//! a\n\nuse crate::{\n    b::{self, thing},\n};"),
            ("b.rs", ""),
        ]);
        let found = uses(&files, &XTASK_NODES);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].to_string(), "a.rs:4: uses `crate::b` (a -> b)");
        assert_eq!(found[1].path, "crate::b::thing");
    }

    #[test]
    fn skips_strings_raw_strings_chars_and_comments() {
        let source = "let a = r#\"crate::x \"# ; let c = '\"'; /* crate::y /* nested */ */\nlet d = b\"super::z\"; fn f<'a>(x: &'a str) { crate::w::f(); }";
        let paths = paths_in(source, &["m".to_owned()]);
        assert_eq!(paths, vec![(2, vec!["w".to_owned(), "f".to_owned()])]);
    }

    #[test]
    fn test_modules_are_left_out() {
        let files = tree(&[
            ("main.rs", "mod a; mod b;"),
            (
                "a.rs",
                "use crate::b::One;\n#[cfg(test)]\nmod tests {\n    use crate::b::Two;\n    mod inner { fn f() { crate::b::three(); } }\n}\nfn g() { crate::b::four(); }\n#[cfg(test)]\nmod more;",
            ),
            ("a/more.rs", "use crate::b::Five;"),
            ("b.rs", ""),
        ]);
        let lines: Vec<usize> = uses(&files, &XTASK_NODES).iter().map(|u| u.line).collect();
        assert_eq!(lines, [1, 7]);
    }

    #[test]
    fn finds_a_cycle_and_names_it() {
        let files = tree(&[
            ("main.rs", "mod fleet; mod lab; mod support;"),
            (
                "fleet.rs",
                "use crate::support::http;\nfn f() { crate::lab::build_agent(); }",
            ),
            (
                "lab/mod.rs",
                "mod scenarios;\npub fn main() { scenarios::run(); }",
            ),
            ("lab/scenarios.rs", "use crate::fleet::live;"),
            ("support.rs", ""),
        ]);
        let cycle = find_cycle(&uses(&files, &XTASK_NODES)).expect("a cycle");
        assert_eq!(
            describe_cycle(&cycle),
            "cycle fleet -> lab -> lab::scenarios -> fleet: \
             fleet.rs:2: uses `crate::lab::build_agent` (fleet -> lab); \
             lab/mod.rs:2: uses `crate::lab::scenarios::run` (lab -> lab::scenarios); \
             lab/scenarios.rs:1: uses `crate::fleet::live` (lab::scenarios -> fleet)"
        );
    }

    #[test]
    fn a_tree_has_no_cycle() {
        let files = tree(&[
            (
                "main.rs",
                "mod fleet; mod lab; mod support;\nfn main() { lab::main(); fleet::run(); }",
            ),
            ("fleet.rs", "use crate::support::http;"),
            ("lab/mod.rs", "mod scenarios;\nuse crate::support::http;"),
            ("lab/scenarios.rs", "use crate::support::prometheus;"),
            ("support.rs", ""),
        ]);
        assert_eq!(find_cycle(&uses(&files, &XTASK_NODES)), None);
    }

    #[test]
    fn xtask_itself_has_no_cycle() {
        check_xtask(&paths::root().join("xtask/src")).unwrap();
    }

    #[test]
    fn the_agent_itself_follows_the_stage_order() {
        check_agent(&paths::root().join("agent/src")).unwrap();
    }

    fn agent_tree(extra: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        let mut files = tree(&[
            (
                "lib.rs",
                "pub mod model; pub mod sys; pub mod observe; pub mod reconcile;\npub mod reload; pub mod state; pub mod export; pub mod daemon; pub mod cli;",
            ),
            ("main.rs", "use kdump_agent::cli;"),
            ("model/mod.rs", "pub mod ranges;"),
            ("model/ranges.rs", "use super::super::model::x;"),
            ("sys/mod.rs", "use crate::model::ranges::RamRanges;"),
            ("observe/mod.rs", "use crate::{model::ranges, sys::procfs};"),
            (
                "reconcile/mod.rs",
                "use crate::observe::Event;\n#[cfg(test)]\nmod tests { use super::*; }",
            ),
            ("reload.rs", "use crate::{reconcile::Plan, observe, sys};"),
            ("state/mod.rs", "use crate::reload::Outcome;"),
            ("export/metrics.rs", "use crate::state::State;"),
            ("daemon.rs", "use crate::{export, observe, reload, state};"),
            ("cli/mod.rs", "use crate::daemon;"),
        ]);
        files.extend(tree(extra));
        files
    }

    #[test]
    fn the_agent_layout_passes() {
        let wrong = violations(&uses(&agent_tree(&[]), &AGENT_NODES), agent_may_use);
        assert!(wrong.is_empty(), "{wrong:?}");
    }

    #[test]
    fn the_agent_check_fails_on_a_wrong_use() {
        let files = agent_tree(&[(
            "observe/probes.rs",
            "//! probes\nuse crate::model::Event;\nuse crate::reload::Reloader;",
        )]);
        let wrong = violations(&uses(&files, &AGENT_NODES), agent_may_use);
        let wrong: Vec<String> = wrong.iter().map(|(u, why)| format!("{u}: {why}")).collect();
        assert_eq!(
            wrong,
            [
                "observe/probes.rs:3: uses `crate::reload::Reloader` (observe -> reload): reload is a later stage than observe"
            ]
        );
    }

    #[test]
    fn agent_rule_table() {
        for (from, to, ok) in [
            ("model", "sys", false),
            ("sys", "model", true),
            ("sys", "observe", false),
            ("observe", "model", true),
            ("reconcile", "observe", true),
            ("observe", "reconcile", false),
            ("export", "state", true),
            ("state", "export", false),
            ("export", "daemon", false),
            ("daemon", "export", true),
            ("daemon", "cli", false),
            ("cli", "daemon", true),
            ("reload", "lib", false),
            ("units", "model", false),
            ("observe", "units", false),
        ] {
            assert_eq!(agent_may_use(from, to).is_ok(), ok, "{from} -> {to}");
        }
    }

    #[test]
    fn agent_check_on_a_tree_in_a_directory() {
        let dir = paths::target_dir().join(format!("xtask-architecture-{}", std::process::id()));
        for (file, text) in agent_tree(&[("sys/procfs.rs", "use crate::export::Metrics;")]) {
            let path = dir.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let err = check_agent(&dir).unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            err,
            "sys/procfs.rs:1: uses `crate::export::Metrics` (sys -> export): sys uses only model and sys"
        );
    }
}
