//! The templates and translation tables a report is rendered with: the built-in ones
//! compiled in from `config/templates/`, each replaceable by a file of the same name in an
//! operator's folder (their letterhead, their wording).

use std::collections::BTreeMap;
use std::path::Path;

use super::RenderError;

/// File names, as in `config/templates/` and in an operator's folder.
pub const HTML: &str = "report.html.j2";
pub const MARKDOWN: &str = "report.md.j2";
pub const LETTERHEAD: &str = "letterhead.html.j2";
pub const STYLE: &str = "report.css";

/// The languages a report can be written in, with their table's file name.
pub const LANGS: [(&str, &str); 2] = [("en", "en.toml"), ("zh-CN", "zh-CN.toml")];

const BUILTIN: [(&str, &str); 6] = [
    (
        HTML,
        include_str!("../../../../config/templates/report.html.j2"),
    ),
    (
        MARKDOWN,
        include_str!("../../../../config/templates/report.md.j2"),
    ),
    (
        LETTERHEAD,
        include_str!("../../../../config/templates/letterhead.html.j2"),
    ),
    (
        STYLE,
        include_str!("../../../../config/templates/report.css"),
    ),
    (
        "en.toml",
        include_str!("../../../../config/templates/en.toml"),
    ),
    (
        "zh-CN.toml",
        include_str!("../../../../config/templates/zh-CN.toml"),
    ),
];

/// A language's labels, flattened to dotted keys (`section.purpose`, `timeline.opened`).
pub type Table = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Templates {
    /// Template name to its source (templates and the stylesheet).
    pub(super) sources: BTreeMap<&'static str, String>,
    /// Language to its table.
    pub(super) tables: BTreeMap<&'static str, Table>,
}

impl Templates {
    /// The built-in set.
    pub fn builtin() -> Templates {
        let mut sources = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for (name, text) in BUILTIN {
            if let Some((lang, _)) = LANGS.iter().find(|(_, file)| *file == name) {
                let table = parse_table(Path::new(name), text)
                    .unwrap_or_else(|e| panic!("built-in translation table: {e}"));
                tables.insert(*lang, table);
            } else {
                sources.insert(name, text.to_owned());
            }
        }
        Templates { sources, tables }
    }

    /// The built-in set with each file found in `dir` in place of its built-in namesake.
    /// A translation table there may hold only the labels it changes; a key the built-in
    /// table does not know is refused (a typo would otherwise be silently ignored).
    /// Every template is compiled here, so a broken one is found before any report.
    pub fn load(dir: &Path) -> Result<Templates, RenderError> {
        if !dir.is_dir() {
            return Err(RenderError::TemplateDir(dir.to_path_buf()));
        }
        let mut templates = Templates::builtin();
        for (name, _) in BUILTIN {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RenderError::Read { path, source }),
            };
            if let Some((lang, _)) = LANGS.iter().find(|(_, file)| *file == name) {
                let own = parse_table(&path, &text)?;
                let table = templates
                    .tables
                    .get_mut(lang)
                    .expect("every language is built in");
                for (key, value) in own {
                    if !table.contains_key(&key) {
                        return Err(RenderError::UnknownLabel { path, key });
                    }
                    table.insert(key, value);
                }
            } else {
                templates.sources.insert(name, text);
            }
        }
        templates.check(dir)?;
        Ok(templates)
    }

    /// Compiles every template, naming the file and line of the first error.
    fn check(&self, dir: &Path) -> Result<(), RenderError> {
        let mut env = minijinja::Environment::new();
        for (name, source) in &self.sources {
            env.add_template(name, source)
                .map_err(|e| template_error(&dir.join(name), &e))?;
        }
        Ok(())
    }

    pub(super) fn table(&self, lang: &str) -> Result<&Table, RenderError> {
        LANGS
            .iter()
            .find(|(l, _)| *l == lang)
            .and_then(|(l, _)| self.tables.get(l))
            .ok_or_else(|| RenderError::UnknownLang(lang.to_owned()))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::builtin()
    }
}

/// A minijinja error as `file:line: what`, the way an operator finds it in their folder.
pub(super) fn template_error(path: &Path, e: &minijinja::Error) -> RenderError {
    RenderError::Template {
        path: path.to_path_buf(),
        line: e.line(),
        message: match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        },
    }
}

fn parse_table(path: &Path, text: &str) -> Result<Table, RenderError> {
    let value: toml::Table = toml::from_str(text).map_err(|e| RenderError::Table {
        path: path.to_path_buf(),
        line: e.span().map(|span| line_of(text, span.start)),
        message: e.message().to_owned(),
    })?;
    let mut table = Table::new();
    flatten("", &value, path, &mut table)?;
    Ok(table)
}

fn flatten(
    prefix: &str,
    value: &toml::Table,
    path: &Path,
    out: &mut Table,
) -> Result<(), RenderError> {
    for (key, value) in value {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Table(t) => flatten(&key, t, path, out)?,
            _ => {
                return Err(RenderError::Table {
                    path: path.to_path_buf(),
                    line: None,
                    message: format!("`{key}` must be a string"),
                });
            }
        }
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
