//! meshctl's reading of manifests: `-f` files, directories and stdin into [`Resource`]s, with
//! every problem reported like a compiler does, as `file:line:column: field: message`.
//!
//! ```text
//!  read_paths ─► Source{name,text} ─► YAML documents (serde-saphyr, with spans)
//!                                        │ syntax error ─► ManifestError::Syntax
//!                                        ▼
//!                      JSON value + field path ─► (line, column) of its key
//!                                        │
//!        mesh_core::config::parse_resource / validate_batch ─► FieldProblem ─► Located
//! ```
//!
//! This module owns reading and locating only. What is valid is decided by
//! `mesh_core::config`, the same function the API server runs, so the server's problems can be
//! mapped back to lines with [`Manifests::locate`] too. It never talks to the server.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use mesh_core::config::{self, ValidResource, field_index, field_key};
use mesh_proto::api::FieldProblem;
use mesh_proto::resource::Resource;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Largest manifest source read, so a stray `-f /dev/zero` fails fast.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024 * 1024;

/// The name of standard input in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Where documents came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// A file path, or `<stdin>`.
    pub name: String,
    pub text: String,
}

/// One non-empty YAML document.
#[derive(Debug, Clone)]
pub struct Document {
    /// Index into [`Manifests::sources`].
    pub source: usize,
    /// Position among the non-empty documents of its source, from 0.
    pub index_in_source: usize,
    pub resource: Resource,
    place: Place,
}

/// Every document read, in order: by source, then by position in the source. A document's
/// index in `documents` is the `document` of the [`FieldProblem`]s about it.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub sources: Vec<Source>,
    pub documents: Vec<Document>,
}

/// One problem at a place in a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Field path, e.g. `spec.rules[0].backendRefs[0].weight`; empty for the whole document.
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Located>),
    #[error(
        "no resources found; give files holding documents with apiVersion, kind, metadata and spec"
    )]
    Empty,
}

/// Read `-f` targets: a file, a directory (its `*.yaml`, `*.yml` and `*.json` files, sorted by
/// name, not recursing) or `-` for standard input, whose text the caller passes as `stdin`.
pub fn read_paths(paths: &[PathBuf], stdin: Option<String>) -> Result<Manifests, ManifestError> {
    let mut stdin = stdin;
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let text = stdin.take().ok_or_else(|| ManifestError::Io {
                path: path.clone(),
                source: std::io::Error::other("standard input was not given, or given twice"),
            })?;
            sources.push(Source {
                name: STDIN_NAME.to_owned(),
                text,
            });
        } else if path.is_dir() {
            for file in manifest_files(path)? {
                sources.push(read_file(&file)?);
            }
        } else {
            sources.push(read_file(path)?);
        }
    }
    parse_source(sources)
}

/// Parse every document of `sources`. Fails on the first syntax error; otherwise reports every
/// structural problem (unknown or missing top-level fields, wrong types) of every document, and
/// then, if there were any, the value problems of the documents that did parse.
pub fn parse_source(sources: Vec<Source>) -> Result<Manifests, ManifestError> {
    let mut read: Vec<(Place, Result<Resource, Vec<FieldProblem>>)> = Vec::new();
    for (source, s) in sources.iter().enumerate() {
        if s.text.len() > MAX_SOURCE_BYTES {
            return Err(too_large(Path::new(&s.name)));
        }
        for (index_in_source, root) in read_yaml(s)?.into_iter().enumerate() {
            let mut locations = Locations::default();
            let value = to_value(root, String::new(), &mut locations);
            let resource = config::parse_resource(read.len(), &value);
            read.push((
                Place {
                    source,
                    index_in_source,
                    locations,
                },
                resource,
            ));
        }
    }
    if read.is_empty() {
        return Err(ManifestError::Empty);
    }
    if read.iter().all(|(_, r)| r.is_ok()) {
        let documents = read
            .into_iter()
            .filter_map(|(place, r)| r.ok().map(|resource| Document::new(place, resource)))
            .collect();
        return Ok(Manifests { sources, documents });
    }
    // Check the documents that did parse too, so that one run shows every problem.
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    let mut resources = Vec::new();
    for (i, (_, r)) in read.iter().enumerate() {
        match r {
            Ok(res) => {
                parsed.push(i);
                resources.push(res.clone());
            }
            Err(p) => problems.extend(p.iter().cloned()),
        }
    }
    if let Err(more) = config::validate_batch(&resources) {
        let remap = |p: FieldProblem| FieldProblem {
            document: parsed[p.document],
            ..p
        };
        problems.extend(more.into_iter().map(remap));
    }
    let places: Vec<&Place> = read.iter().map(|(place, _)| place).collect();
    Err(ManifestError::Invalid(locate_all(
        &sources, &places, problems,
    )))
}

impl Manifests {
    /// Run `mesh_core::config::validate_batch` over all documents. On any problem nothing is
    /// returned, so the caller applies nothing; every problem is mapped to file:line:column.
    pub fn validate(&self) -> Result<Vec<ValidResource>, ManifestError> {
        let resources: Vec<Resource> = self.documents.iter().map(|d| d.resource.clone()).collect();
        config::validate_batch(&resources)
            .map_err(|p| ManifestError::Invalid(locate_all(&self.sources, &self.places(), p)))
    }

    /// Where a problem is: the key of its field, or of the nearest enclosing field that exists
    /// (a missing required field maps to its parent mapping).
    pub fn locate(&self, p: &FieldProblem) -> Located {
        let place = self.documents.get(p.document).map(|d| &d.place);
        locate(&self.sources, place, p)
    }

    fn places(&self) -> Vec<&Place> {
        self.documents.iter().map(|d| &d.place).collect()
    }
}

impl Document {
    fn new(place: Place, resource: Resource) -> Self {
        Document {
            source: place.source,
            index_in_source: place.index_in_source,
            resource,
            place,
        }
    }

    /// The (line, column) of `field`, or of its nearest enclosing field that exists.
    pub fn position(&self, field: &str) -> (usize, usize) {
        self.place.locations.position(field)
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

fn render(problems: &[Located]) -> String {
    let lines: Vec<String> = problems.iter().map(Located::to_string).collect();
    lines.join("\n")
}

/// Where a document is: its source, and the position of each of its field paths.
#[derive(Debug, Clone)]
struct Place {
    source: usize,
    index_in_source: usize,
    locations: Locations,
}

/// Field path -> (line, column) of its key (or of the item, for list items) in one document.
#[derive(Debug, Clone, Default)]
struct Locations(BTreeMap<String, (usize, usize)>);

impl Locations {
    fn position(&self, field: &str) -> (usize, usize) {
        let mut path = field;
        loop {
            if let Some(at) = self.0.get(path) {
                return *at;
            }
            if path.is_empty() {
                return (1, 1);
            }
            path = &path[..path.rfind(['.', '[']).unwrap_or(0)];
        }
    }
}

fn locate(sources: &[Source], place: Option<&Place>, p: &FieldProblem) -> Located {
    let (file, (line, column)) = match place {
        Some(place) => {
            let file = sources
                .get(place.source)
                .map_or("<unknown>", |s| s.name.as_str());
            (file.to_owned(), place.locations.position(&p.field))
        }
        None => (format!("<document {}>", p.document), (1, 1)),
    };
    Located {
        file,
        line,
        column,
        field: p.field.clone(),
        message: p.message.clone(),
    }
}

/// Locate every problem, ordered by document and then by position in it.
fn locate_all(sources: &[Source], places: &[&Place], problems: Vec<FieldProblem>) -> Vec<Located> {
    let mut located: Vec<(usize, Located)> = problems
        .iter()
        .map(|p| {
            (
                p.document,
                locate(sources, places.get(p.document).copied(), p),
            )
        })
        .collect();
    located.sort_by_key(|(doc, l)| (*doc, l.line, l.column));
    located.into_iter().map(|(_, l)| l).collect()
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path) -> Result<Source, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_SOURCE_BYTES {
        return Err(too_large(path));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| io(std::io::Error::other("not UTF-8 text; save it as UTF-8")))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

fn too_large(path: &Path) -> ManifestError {
    let limit = MAX_SOURCE_BYTES / (1024 * 1024);
    ManifestError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!("larger than {limit} MiB; split it into files")),
    }
}

/// The non-empty documents of one source, with spans. Null documents (a trailing `---`, only
/// comments) are skipped by serde-saphyr itself.
fn read_yaml(source: &Source) -> Result<Vec<Spanned<Node>>, ManifestError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_multiple_with_options::<Spanned<Node>, Vec<_>>(&source.text, options)
        .map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((1, 1), |l| (to_usize(l.line()), to_usize(l.column())));
            ManifestError::Syntax {
                file: source.name.clone(),
                line,
                column,
                message: syntax_message(&e, line, column),
            }
        })
}

/// serde-saphyr's message without the position we print in front anyway, and in our voice.
fn syntax_message(e: &serde_saphyr::Error, line: usize, column: usize) -> String {
    let text = e.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {column}");
    let text = text.strip_suffix(&suffix).unwrap_or(&text);
    match text.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest.split(',').next().unwrap_or(rest);
            format!("key {key:?} appears twice in this mapping; keep one")
        }
        None => text.to_owned(),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn position<T>(s: &Spanned<T>) -> (usize, usize) {
    (
        to_usize(s.referenced.line()),
        to_usize(s.referenced.column()),
    )
}

/// Convert a YAML node to JSON, recording where each field path is. Keys map to their key;
/// list items to the item.
fn to_value(node: Spanned<Node>, path: String, locations: &mut Locations) -> serde_json::Value {
    use serde_json::Value;
    locations
        .0
        .entry(path.clone())
        .or_insert_with(|| position(&node));
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_value(item, field_index(&path, i), locations))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                let at = field_key(&path, &key.value);
                locations.0.insert(at.clone(), position(&key));
                map.insert(key.value, to_value(value, at, locations));
            }
            Value::Object(map)
        }
    }
}

/// A YAML value with the span of every key and value, as serde-saphyr reports them.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Node, E> {
        Ok(Node::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Node, E> {
        Ok(Node::UInt(u))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Node, E> {
        Ok(Node::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::Str(s))
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Node, E> {
        String::from_utf8(b.to_vec())
            .map(Node::Str)
            .map_err(|_| E::custom("binary value is not UTF-8 text; write it as a string"))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
apiVersion: meshfed.io/v1alpha1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs:
    - name: web
  rules:
    - backendRefs:
        - name: web-v1
          weight: 90
        - name: web-v2
          weight: 10
";

    const EXPORT: &str = "\
apiVersion: meshfed.io/v1alpha1
kind: ServiceExport
metadata:
  name: api
spec:
  service: api
  peers: [west]
";

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    fn parse(text: &str) -> Result<Manifests, ManifestError> {
        parse_source(vec![source("deploy/x.yaml", text)])
    }

    /// Parse and validate; the located problems, or a panic if everything was valid.
    fn invalid(sources: Vec<Source>) -> Vec<Located> {
        match parse_source(sources).and_then(|m| m.validate()) {
            Err(ManifestError::Invalid(located)) => located,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn at(l: &Located) -> (&str, usize, usize, &str) {
        (l.file.as_str(), l.line, l.column, l.field.as_str())
    }

    fn problem(document: usize, field: &str) -> FieldProblem {
        FieldProblem {
            document,
            field: field.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn valid_documents_parse_and_validate() {
        let m = parse(&format!("{ROUTE}---\n{EXPORT}---\n")).unwrap();
        assert_eq!(m.documents.len(), 2);
        assert_eq!(m.documents[1].index_in_source, 1);
        assert_eq!(m.documents[1].resource.kind, "ServiceExport");
        assert_eq!(m.validate().unwrap().len(), 2);
    }

    #[test]
    fn empty_documents_are_skipped_and_nothing_at_all_is_empty() {
        let m = parse(&format!("---\n# just a comment\n---\n{EXPORT}---\n...\n")).unwrap();
        assert_eq!(m.documents.len(), 1);
        assert_eq!(m.documents[0].index_in_source, 0);
        assert!(matches!(
            parse("# nothing\n---\n---\n"),
            Err(ManifestError::Empty)
        ));
        assert!(matches!(parse(""), Err(ManifestError::Empty)));
    }

    #[test]
    fn bad_indentation_is_a_syntax_error_at_its_line() {
        let text = "kind: ServiceExport\nspec:\n  service: api\n    peers: [west]\n";
        match parse(text) {
            Err(ManifestError::Syntax {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!((file.as_str(), line), ("deploy/x.yaml", 4), "{message}");
                assert!(column > 0);
                assert!(!message.contains("at line"), "{message}");
            }
            other => panic!("expected Syntax, got {other:?}"),
        }
    }

    #[test]
    fn unclosed_bracket_is_a_syntax_error_at_the_bracket() {
        let text = format!("{ROUTE}---\nkind: ServiceExport\nspec:\n  peers: [west, north\n");
        let e = parse(&text).unwrap_err();
        let ManifestError::Syntax { line, column, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((*line, *column), (17, 10));
        assert!(
            e.to_string()
                .starts_with("deploy/x.yaml:17:10: unclosed bracket"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_in_our_words() {
        let e = parse("kind: ServiceExport\nkind: HTTPRoute\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "deploy/x.yaml:2:1: key \"kind\" appears twice in this mapping; keep one"
        );
    }

    #[test]
    fn unknown_kind_points_at_the_kind_key() {
        let located = invalid(vec![source(
            "a.yaml",
            &EXPORT.replace("ServiceExport", "Export"),
        )]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("a.yaml", 2, 1, "kind")]
        );
        assert!(located[0].message.starts_with("unknown kind \"Export\""));
    }

    #[test]
    fn invalid_fields_point_at_their_keys() {
        let text = ROUTE
            .replace("weight: 90", "weight: -5")
            .replace("weight: 10", "wieght: 10");
        let located = invalid(vec![source("deploy/x.yaml", &text)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [
                (
                    "deploy/x.yaml",
                    11,
                    11,
                    "spec.rules[0].backendRefs[0].weight"
                ),
                (
                    "deploy/x.yaml",
                    13,
                    11,
                    "spec.rules[0].backendRefs[1].wieght"
                ),
            ]
        );
        let rendered = ManifestError::Invalid(located).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[0],
            "deploy/x.yaml:11:11: spec.rules[0].backendRefs[0].weight: -5 is out of range; use a \
             whole number from 0 to 4294967295"
        );
        assert!(lines[1].ends_with("wieght: unknown field \"wieght\"; did you mean \"weight\"?"));
    }

    #[test]
    fn value_problems_point_at_keys_and_list_items() {
        let text = EXPORT.replace("peers: [west]", "peers: [west, West]");
        let located = invalid(vec![source("e.yaml", &text)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("e.yaml", 7, 17, "spec.peers[1]")]
        );
    }

    #[test]
    fn missing_fields_point_at_their_parent() {
        let text = ROUTE.replace("  parentRefs:\n    - name: web\n", "");
        let located = invalid(vec![source("r.yaml", &text)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("r.yaml", 5, 1, "spec.parentRefs")]
        );
        let no_spec =
            "apiVersion: meshfed.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: x\n";
        let located = invalid(vec![source("s.yaml", no_spec)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("s.yaml", 1, 1, "spec")]
        );
    }

    #[test]
    fn one_bad_document_fails_the_batch_and_returns_no_resources() {
        let bad = EXPORT
            .replace("name: api", "name: api2")
            .replace("[west]", "[]");
        let m = parse(&format!("{ROUTE}---\n{bad}---\n{EXPORT}")).unwrap();
        let Err(ManifestError::Invalid(located)) = m.validate() else {
            panic!("the batch must fail as a whole, returning no resources")
        };
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("deploy/x.yaml", 21, 3, "spec.peers")]
        );
        // The server's problems map back the same way.
        assert_eq!(
            at(&m.locate(&problem(1, "spec.peers"))),
            ("deploy/x.yaml", 21, 3, "spec.peers")
        );
        assert_eq!(at(&m.locate(&problem(0, "spec.rules[7].x"))).1, 8);
        assert_eq!(m.locate(&problem(9, "kind")).file, "<document 9>");
    }

    #[test]
    fn structural_and_value_problems_of_all_documents_come_together() {
        let first = ROUTE.replace("spec:", "specs:");
        let second = EXPORT.replace("[west]", "[west, west]");
        let located = invalid(vec![source("1.yaml", &first), source("2.yaml", &second)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [
                ("1.yaml", 1, 1, "spec"),
                ("1.yaml", 5, 1, "specs"),
                ("2.yaml", 7, 17, "spec.peers[1]")
            ]
        );
    }

    #[test]
    fn duplicate_resources_across_files_point_at_the_later_name() {
        let located = invalid(vec![source("1.yaml", EXPORT), source("2.yaml", EXPORT)]);
        assert_eq!(
            located.iter().map(at).collect::<Vec<_>>(),
            [("2.yaml", 4, 3, "metadata.name")]
        );
    }

    #[test]
    fn directories_are_read_sorted_and_filtered_and_stdin_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"apiVersion": "meshfed.io/v1alpha1", "kind": "ServiceExport",
            "metadata": {"name": "c"}, "spec": {"service": "c", "peers": ["west"]}}"#;
        std::fs::write(dir.path().join("b.yml"), ROUTE).unwrap();
        std::fs::write(dir.path().join("a.yaml"), EXPORT).unwrap();
        std::fs::write(dir.path().join("c.json"), json).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: a manifest: at all").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/d.yaml"), "{{{").unwrap();
        let stdin = EXPORT.replace("name: api", "name: piped");
        let m = read_paths(&[dir.path().to_owned(), "-".into()], Some(stdin)).unwrap();
        let names: Vec<&str> = m
            .documents
            .iter()
            .map(|d| d.resource.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["api", "web", "c", "piped"]);
        assert!(m.sources[0].name.ends_with("a.yaml"));
        assert_eq!(m.sources[3].name, STDIN_NAME);
        m.validate().unwrap();

        let twice = read_paths(&["-".into(), "-".into()], Some(EXPORT.to_owned()));
        assert!(matches!(twice, Err(ManifestError::Io { .. })));
        let missing = read_paths(&[dir.path().join("nope.yaml")], None).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
    }
}
