//! `--format` as Docker's CLI has it: `table` and `table TEMPLATE` (columns aligned under
//! a header), `json` (one JSON object a line), or a Go template run on each object, with
//! Docker's template functions (`json`, `join`, `split`, `lower`, `upper`, `title`, `pad`,
//! `truncate`). It renders objects it is given; what they hold is the commands' business
//! (`listing`, `inspect`). The template language itself is the `gotmpl` crate's.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::{Context, Result};
use gotmpl::{Template, Value};
use serde::Serialize;

/// Docker's `table` output: cells padded to the widest of their column plus 3, at least
/// 10 wide (its tabwriter's minwidth 10, padding 3); the last cell of a line unpadded.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// A parsed `--format`: the template run on each object, and, for tables, on the headers.
pub struct Formatter {
    row: Template,
    header: Option<Template>,
}

impl Formatter {
    /// Parses `format` as Docker does: empty or `table` is `default_table`; `table X` is
    /// X under a header; `json` is `{{json .}}`; anything else a template. `\t` and `\n`
    /// written as two characters are a tab and a newline.
    pub fn parse(format: &str, default_table: &str) -> Result<Self> {
        let chosen = match format.trim() {
            "" | "table" => default_table,
            other => other,
        };
        let (table, source) = match chosen {
            "json" => (false, "{{json .}}"),
            other => match other.strip_prefix("table ") {
                Some(rest) => (true, rest),
                None => (false, other),
            },
        };
        let source = source.trim().replace(r"\t", "\t").replace(r"\n", "\n");
        let parse = |functions: fn(&str) -> Option<Function>| {
            let template = DOCKER_FUNCTIONS.iter().fold(Template::new(""), |t, name| {
                t.func(name, functions(name).expect("every function is there"))
            });
            template.parse(&source).with_context(|| {
                format!("--format {format:?}: not a Go template (e.g. '{{{{.ID}}}}', 'table {{{{.ID}}}}\\t{{{{.Names}}}}', 'json')")
            })
        };
        let row = parse(function)?;
        let header = match table {
            true => Some(parse(header_function)?),
            false => None,
        };
        Ok(Self { row, header })
    }

    /// The output for `objects`, each rendered as one line; for a table, under the line
    /// `headers` render to, in aligned columns.
    pub fn render<T: Serialize>(&self, objects: &[T], headers: &BTreeMap<&str, &str>) -> Result<String> {
        let mut out = String::new();
        if let Some(header) = &self.header {
            out += &header.execute_to_string(&gotmpl::to_value(headers)?).context("rendering the header")?;
            out.push('\n');
        }
        for object in objects {
            let value = gotmpl::to_value(object).context("an object for --format")?;
            out += &self.row.execute_to_string(&value).context("executing --format's template")?;
            out.push('\n');
        }
        Ok(match self.header {
            Some(_) => align(&out),
            None => out,
        })
    }
}

/// Lines of tab-separated cells aligned in columns as Docker's tabwriter aligns them.
pub fn align(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|line| line.split('\t').collect()).collect();
    let mut widths: Vec<usize> = vec![];
    for cells in &lines {
        // The last cell of a line is not in a column: nothing after it to align.
        for (column, cell) in cells.iter().take(cells.len() - 1).enumerate() {
            let width = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(column) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for cells in lines {
        let last = cells.len() - 1;
        for (column, cell) in cells.into_iter().enumerate() {
            match column == last {
                true => out += cell,
                false => out += &format!("{cell:<width$}", width = widths[column]),
            }
        }
        out.push('\n');
    }
    out
}

type Function = fn(&[Value]) -> gotmpl::Result<Value>;

const DOCKER_FUNCTIONS: [&str; 8] = ["json", "join", "split", "lower", "upper", "title", "pad", "truncate"];

/// Docker's template functions (docker/cli's `templates` package), on rows.
fn function(name: &str) -> Option<Function> {
    Some(match name {
        "json" => |args| Ok(string(serde_json::to_string(&to_json(arg(args, 0)?)).unwrap_or_default())),
        "join" => |args| {
            let list = arg(args, 0)?;
            let items: Vec<String> = match list {
                Value::List(items) => items.iter().map(Value::to_string).collect(),
                other => return Err(type_error("list", other)),
            };
            Ok(string(items.join(&text(arg(args, 1)?)?)))
        },
        "split" => |args| {
            let (source, separator) = (text(arg(args, 0)?)?, text(arg(args, 1)?)?);
            let parts: Vec<Value> = source.split(separator.as_str()).map(|p| string(p.into())).collect();
            Ok(Value::List(Arc::from(parts)))
        },
        "lower" => |args| Ok(string(text(arg(args, 0)?)?.to_lowercase())),
        "upper" => |args| Ok(string(text(arg(args, 0)?)?.to_uppercase())),
        "title" => |args| Ok(string(title(&text(arg(args, 0)?)?))),
        "pad" => |args| {
            let source = text(arg(args, 0)?)?;
            let (prefix, suffix) = (count(arg(args, 1)?)?, count(arg(args, 2)?)?);
            Ok(string(match source.is_empty() {
                true => source,
                false => format!("{}{source}{}", " ".repeat(prefix), " ".repeat(suffix)),
            }))
        },
        "truncate" => |args| {
            let (source, length) = (text(arg(args, 0)?)?, count(arg(args, 1)?)?);
            Ok(string(source.chars().take(length).collect()))
        },
        _ => return None,
    })
}

/// The same functions on the header, as Docker has them: each gives back its first
/// argument, so that `{{upper .Names}}` heads its column `NAMES`, not what it would make of it.
fn header_function(name: &str) -> Option<Function> {
    DOCKER_FUNCTIONS.contains(&name).then_some(|args| arg(args, 0).cloned())
}

fn arg(args: &[Value], n: usize) -> gotmpl::Result<&Value> {
    args.get(n)
        .ok_or_else(|| gotmpl::TemplateError::Exec(format!("wrong number of arguments: {}", args.len())))
}

fn string(s: String) -> Value {
    Value::String(s.into())
}

fn text(value: &Value) -> gotmpl::Result<String> {
    match value {
        Value::String(s) => Ok(s.to_string()),
        other => Err(type_error("string", other)),
    }
}

fn count(value: &Value) -> gotmpl::Result<usize> {
    value.as_int().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| type_error("int", value))
}

fn type_error(expected: &'static str, got: &Value) -> gotmpl::TemplateError {
    gotmpl::TemplateError::TypeMismatch { expected, got: got.type_name() }
}

/// Go's `strings.Title`: each word's first letter upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        match at_word_start {
            true => out.extend(c.to_uppercase()),
            false => out.push(c),
        }
        at_word_start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    out
}

/// A template value as JSON, as Go's `encoding/json` writes it (no HTML escaping).
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(n) => (*n).into(),
        Value::Uint(n) => (*n).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        Value::String(s) => s.to_string().into(),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(format: &str, objects: &[serde_json::Value]) -> String {
        let headers = BTreeMap::from([("ID", "CONTAINER ID"), ("Names", "NAMES")]);
        Formatter::parse(format, "table {{.ID}}\t{{.Names}}").unwrap().render(objects, &headers).unwrap()
    }

    fn web() -> serde_json::Value {
        json!({
            "ID": "0123456789ab",
            "Names": "web",
            "NetworkSettings": {"Networks": {"front": {"IPAddress": "10.1.0.2"}, "back": {"IPAddress": "10.2.0.2"}}},
            "Labels": {"team": "net"},
        })
    }

    #[test]
    fn templates_reach_nested_fields_as_dockers_do() {
        assert_eq!(render("{{.NetworkSettings.Networks.front.IPAddress}}", &[web()]), "10.1.0.2\n");
        assert_eq!(
            render(
                "{{range $name, $n := .NetworkSettings.Networks}}{{$name}}={{$n.IPAddress}} {{end}}",
                &[web()]
            ),
            "back=10.2.0.2 front=10.1.0.2 \n",
            "range over a map goes in key order, as Go's"
        );
        assert_eq!(
            render("{{if eq .Names \"web\"}}yes{{else}}no{{end}}", &[web(), json!({"Names": "db"})]),
            "yes\nno\n",
            "one line per object"
        );
        assert_eq!(render("{{.Missing}}", &[web()]), "<no value>\n", "a missing key, as Go's map lookup");
    }

    #[test]
    fn json_gives_json_lines() {
        let line = render("json", &[web()]);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), web());
        assert_eq!(render("{{json .Labels}}", &[web()]), "{\"team\":\"net\"}\n");
        assert_eq!(render("{{json .Names}}", &[web()]), "\"web\"\n");
        assert_eq!(render("{{json .}}", &[json!({"A": "<&>"})]), "{\"A\":\"<&>\"}\n", "no HTML escaping");
    }

    #[test]
    fn tables_align_columns_under_the_header_as_dockers_tabwriter() {
        let rows = [web(), json!({"ID": "fedcba987654", "Names": "a-much-longer-name"})];
        assert_eq!(
            render("table", &rows),
            "CONTAINER ID   NAMES\n0123456789ab   web\nfedcba987654   a-much-longer-name\n",
            "the default table; the last column unpadded"
        );
        assert_eq!(
            render(r"table {{.Names}}\t{{.ID}}", &rows),
            "NAMES                CONTAINER ID\nweb                  0123456789ab\na-much-longer-name   fedcba987654\n",
            "`\\t` as typed in a shell is a tab; the widest cell and 3 make the column"
        );
        assert_eq!(
            render("table {{upper .Names}}", &[web()]),
            "NAMES\nWEB\n",
            "functions leave the header be"
        );
        assert_eq!(render("table", &[]), "CONTAINER ID   NAMES\n", "no rows: the header alone");
        assert_eq!(align("a\tb\n"), "a         b\n", "at least 10 wide");
    }

    #[test]
    fn dockers_functions_work_as_theirs() {
        let o = [json!({"S": "a,b,c", "L": ["x", "y"], "N": "hello world"})];
        assert_eq!(render("{{join .L \", \"}}", &o), "x, y\n");
        assert_eq!(render("{{index (split .S \",\") 1}}", &o), "b\n");
        assert_eq!(render("{{upper .N}} {{lower \"AB\"}} {{title .N}}", &o), "HELLO WORLD ab Hello World\n");
        assert_eq!(render("[{{pad .N 1 2}}]", &o), "[ hello world  ]\n");
        assert_eq!(render("{{truncate .N 5}}", &o), "hello\n");
        assert_eq!(
            render("{{printf \"%-4s|%d\" \"ab\" (len .L)}}", &o),
            "ab  |2\n",
            "Go's own are the crate's"
        );
    }

    #[test]
    fn a_bad_template_is_refused_with_the_input_and_examples() {
        let headers = BTreeMap::new();
        let err = format!("{:#}", Formatter::parse("{{.ID", "").err().unwrap());
        assert!(err.contains("--format \"{{.ID\"") && err.contains("table {{.ID}}"), "{err}");
        // Go refuses an unknown function when it parses; this crate when it runs: an error all the same.
        let unknown =
            Formatter::parse("{{nosuch .ID}}", "").and_then(|f| f.render(&[json!({"ID": 3})], &headers));
        assert!(format!("{:#}", unknown.unwrap_err()).contains("nosuch"));
        let bad = Formatter::parse("{{upper .ID}}", "").unwrap().render(&[json!({"ID": 3})], &headers);
        assert!(format!("{:#}", bad.unwrap_err()).contains("string"), "a type error is an error");
    }
}
