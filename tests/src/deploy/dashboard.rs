//! The Grafana dashboard's queries (PromQL, parsed with `promql-parser`) and what a
//! service's `/metrics` answers (the Prometheus text format).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

use super::{DASHBOARD, read};

pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel with queries, rows' children included; a panel without any fails.
pub fn panels(dashboard: &Value) -> Vec<Value> {
    fn walk(list: &Value, out: &mut Vec<Value>) {
        for panel in list.as_array().into_iter().flatten() {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
                continue;
            }
            let targets = panel["targets"].as_array();
            assert!(
                targets.is_some_and(|t| !t.is_empty()
                    && t.iter()
                        .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty()))),
                "panel {} has a target without a PromQL expr",
                panel["title"]
            );
            out.push(panel.clone());
        }
    }
    let mut out = vec![];
    walk(&dashboard["panels"], &mut out);
    assert!(!out.is_empty(), "the dashboard has no panels");
    out
}

/// Every metric name the dashboard's queries select.
pub fn dashboard_metrics() -> BTreeSet<String> {
    panels(&dashboard())
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| promql_metrics(t["expr"].as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Grafana's interval variables, which it replaces by a duration before Prometheus sees
/// the query. Any other `$variable` must stand where a string does (a label value).
const GRAFANA_DURATIONS: &[&str] = &[
    "${__rate_interval}",
    "$__rate_interval",
    "${__interval}",
    "$__interval",
    "${__range}",
    "$__range",
];

/// The metric names a PromQL expression selects (instant and range vector selectors, at
/// any depth). Panics, naming the expression, if it is not PromQL.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let query = GRAFANA_DURATIONS
        .iter()
        .fold(expr.to_string(), |q, var| q.replace(var, "5m"));
    let ast = promql_parser::parser::parse(&query)
        .unwrap_or_else(|e| panic!("not a PromQL expression: {expr}: {e}"));
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Infallible> {
            if let Expr::VectorSelector(VectorSelector {
                name: Some(name), ..
            })
            | Expr::MatrixSelector(MatrixSelector {
                vs: VectorSelector {
                    name: Some(name), ..
                },
                ..
            }) = expr
            {
                self.0.insert(name.clone());
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    let Ok(_) = walk_expr(&mut names, &ast);
    names.0
}

/// One scrape: the series names (`_bucket`, `_sum`, `_count` as written) and each
/// family's `# TYPE`.
#[derive(Debug, Default)]
pub struct Exposition {
    pub series: BTreeSet<String>,
    pub types: BTreeMap<String, String>,
}

/// Reads the Prometheus text format as far as the test needs: a sample line's name and the
/// `# TYPE` lines. (Values, labels and timestamps are not looked at, so a parser crate for
/// the format would add a dependency and no check.)
pub fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                e.types.insert(name.into(), kind.into());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            e.series.insert(name.to_string());
        }
    }
    e
}

/// One GET of a `/metrics` endpoint.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Result<Exposition, String> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok(parse_exposition(&text))
}
