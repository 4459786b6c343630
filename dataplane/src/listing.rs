//! The rows of `ps` and `network ls` as Docker's CLI makes them from what the daemon
//! answers (objects in `docker inspect`'s shape): times relative to now, status words,
//! ports, truncation, and `--filter`. It neither asks the daemon nor prints.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use jiff::{Timestamp, tz::TimeZone};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// `ps`'s default table: Docker's columns but `IMAGE`, since our containers run the host's
/// own files and have no image to show.
pub const PS_TABLE: &str =
    "table {{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
/// `network ls`'s default table, Docker's.
pub const NETWORK_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// The header of each field of a `ps` row, Docker's.
pub const PS_HEADERS: [(&str, &str); 11] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Names", "NAMES"),
    ("Networks", "NETWORKS"),
    ("Labels", "LABELS"),
];

/// The header of each field of a `network ls` row, Docker's.
pub const NETWORK_HEADERS: [(&str, &str); 8] = [
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED"),
];

/// How many characters of a command `ps` shows unless `--no-trunc` (Docker's).
const COMMAND_WIDTH: usize = 20;
/// How many characters of an ID lists show unless `--no-trunc`.
const SHORT_ID: usize = 12;

/// A container as `docker inspect` shows it, the fields `ps` reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedContainer {
    #[serde(rename = "Id")]
    id: String,
    name: String,
    created: Timestamp,
    state: InspectedState,
    config: InspectedConfig,
    network_settings: InspectedNetworkSettings,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedState {
    status: String,
    exit_code: i64,
    started_at: String,
    finished_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedConfig {
    cmd: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetworkSettings {
    #[serde(default)]
    networks: BTreeMap<String, InspectedEndpoint>,
    #[serde(default)]
    ports: BTreeMap<String, Vec<HostBinding>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedEndpoint {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HostBinding {
    host_ip: String,
    host_port: String,
}

/// One row of `ps`: the fields Docker's `ps --format` knows, as it renders them.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRow {
    #[serde(rename = "ID")]
    pub id: String,
    /// Always empty: there is no image.
    pub image: String,
    pub command: String,
    pub created_at: String,
    pub running_for: String,
    pub ports: String,
    pub status: String,
    pub state: String,
    pub names: String,
    pub networks: String,
    pub labels: String,
}

/// A network as `docker network inspect` shows it, the fields `network ls` reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedNetwork {
    #[serde(rename = "Id")]
    id: String,
    name: String,
    driver: String,
    scope: String,
    #[serde(rename = "EnableIPv6")]
    ipv6: bool,
    internal: bool,
    created: Timestamp,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One row of `network ls`, as Docker's `network ls --format` renders it.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    #[serde(rename = "IPv6")]
    pub ipv6: String,
    pub internal: String,
    pub labels: String,
    pub created_at: String,
}

/// Go's zero time, which Docker writes for a moment that has not come.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn moment(text: &str) -> Option<Timestamp> {
    (text != ZERO_TIME).then(|| text.parse().ok()).flatten()
}

impl InspectedContainer {
    /// Its `ps` row at `now`; `trunc` shortens the ID and the command as Docker does.
    pub fn row(&self, now: Timestamp, trunc: bool) -> ContainerRow {
        let command = self.config.cmd.join(" ");
        let command = match trunc {
            true => ellipsis(&command, COMMAND_WIDTH),
            false => command,
        };
        ContainerRow {
            id: short(&self.id, trunc),
            image: String::new(),
            command: format!("{command:?}"),
            // Docker's list has the creation to the second.
            created_at: local_time(Timestamp::from_second(self.created.as_second()).unwrap_or(self.created)),
            running_for: format!("{} ago", human_duration(now.duration_since(self.created))),
            ports: displayable_ports(&self.network_settings.ports),
            status: self.status(now),
            state: self.state.status.clone(),
            names: self.name().to_string(),
            networks: self.network_settings.networks.keys().cloned().collect::<Vec<_>>().join(","),
            labels: labels(&self.config.labels),
        }
    }

    fn name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// Docker's status words: `Up 5 minutes`, `Exited (0) 2 seconds ago`, `Created`, `Dead`.
    fn status(&self, now: Timestamp) -> String {
        let since = |at: Timestamp| human_duration(now.duration_since(at));
        match self.state.status.as_str() {
            "running" => moment(&self.state.started_at).map_or("Up".into(), |at| format!("Up {}", since(at))),
            "dead" => "Dead".into(),
            _ if moment(&self.state.started_at).is_none() => "Created".into(),
            _ => moment(&self.state.finished_at)
                .map_or(String::new(), |at| format!("Exited ({}) {} ago", self.state.exit_code, since(at))),
        }
    }
}

impl InspectedNetwork {
    /// Its `network ls` row; `trunc` shortens the ID.
    pub fn row(&self, trunc: bool) -> NetworkRow {
        NetworkRow {
            id: short(&self.id, trunc),
            name: self.name.clone(),
            driver: self.driver.clone(),
            scope: self.scope.clone(),
            ipv6: self.ipv6.to_string(),
            internal: self.internal.to_string(),
            labels: labels(&self.labels),
            created_at: local_time(self.created),
        }
    }
}

fn short(id: &str, trunc: bool) -> String {
    match trunc {
        true => id.chars().take(SHORT_ID).collect(),
        false => id.to_string(),
    }
}

/// Docker's `Ellipsis`: `s` itself when it fits in `width`, else its first `width - 1`
/// characters and `…`.
pub fn ellipsis(s: &str, width: usize) -> String {
    match s.chars().count() <= width {
        true => s.to_string(),
        false => s.chars().take(width.saturating_sub(1)).chain(['…']).collect(),
    }
}

/// Labels as Docker's lists show them: `k=v,k2=v2`.
fn labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A moment as Go's `time.Time.String()` writes it in the local zone:
/// `2026-11-30 03:26:04.123456789 +0000 UTC`.
fn local_time(at: Timestamp) -> String {
    let zoned = at.to_zoned(TimeZone::system());
    let fraction = match at.subsec_nanosecond() {
        0 => String::new(),
        nanos => format!(".{nanos:09}").trim_end_matches('0').to_string(),
    };
    format!("{}{fraction} {}", zoned.strftime("%Y-%m-%d %H:%M:%S"), zoned.strftime("%z %Z"))
}

/// Docker's `HumanDuration` (go-units): `Less than a second`, `1 second`, `5 minutes`,
/// `About an hour`, `3 days`, ...
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // Hours are rounded, the others cut, as go-units does.
    let hours = (d.as_secs_f64() / 3600.0).round() as i64;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// One published port as Docker's API lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Published {
    container_port: u16,
    ip: String,
    host_port: u16,
    proto: String,
}

/// Docker's `PORTS`: `0.0.0.0:8080->80/tcp`; a run of ports published on the same
/// numbers grouped as `0.0.0.0:80-81->80-81/tcp`; mappings to other numbers after them.
fn displayable_ports(ports: &BTreeMap<String, Vec<HostBinding>>) -> String {
    let mut published: Vec<Published> = vec![];
    for (key, bindings) in ports {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let Ok(container_port) = port.parse() else { continue };
        for binding in bindings {
            published.push(Published {
                container_port,
                ip: binding.host_ip.clone(),
                host_port: binding.host_port.parse().unwrap_or(0),
                proto: proto.to_string(),
            });
        }
    }
    published.sort();
    // Runs of ports published on their own numbers, by address and protocol, in the
    // order their first port comes.
    let mut groups: Vec<(String, u16, u16)> = vec![];
    let mut closed = vec![];
    let mut elsewhere = vec![];
    for p in published {
        if p.host_port != p.container_port {
            elsewhere.push(format!("{}:{}->{}/{}", p.ip, p.host_port, p.container_port, p.proto));
            continue;
        }
        let key = format!("{}/{}", p.ip, p.proto);
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, _, last)) if p.container_port == *last + 1 => *last = p.container_port,
            Some(group) => {
                closed.push(group_text(group));
                *group = (key, p.container_port, p.container_port);
            }
            None => groups.push((key, p.container_port, p.container_port)),
        }
    }
    closed.extend(groups.iter().map(group_text));
    closed.extend(elsewhere);
    closed.join(", ")
}

fn group_text((key, first, last): &(String, u16, u16)) -> String {
    let (ip, proto) = key.split_once('/').unwrap_or(("", key));
    let ports = match first == last {
        true => first.to_string(),
        false => format!("{first}-{last}"),
    };
    format!("{ip}:{ports}->{ports}/{proto}")
}

/// `--filter`s, Docker's way: values of one key match if any matches, keys all must.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE`s, refusing keys outside `known` with the list of those.
    pub fn parse(given: &[String], known: &[&str]) -> Result<Self> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in given {
            let Some((key, value)) = filter.split_once('=') else {
                bail!("--filter {filter:?}: expected KEY=VALUE, e.g. name=web");
            };
            if !known.contains(&key) {
                bail!("--filter {filter:?}: no filter {key:?}; filter by {}", known.join(", "));
            }
            if key == "name" {
                Regex::new(value)
                    .with_context(|| format!("--filter {filter:?}: not a regular expression"))?;
            }
            filters.entry(key.to_string()).or_default().push(value.to_string());
        }
        Ok(Self(filters))
    }

    /// Whether `key`'s filters let through an object for which `matches` tells whether
    /// it matches one value (there is none to pass: every object goes through).
    fn allows(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|values| values.iter().any(|v| matches(v)))
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `ps`'s filters: `name` (a regexp, on the name with or without its `/`), `network`
    /// (a name or an ID's start), `status` (`running`, `exited`, `created`, `dead`).
    pub fn allow_container(&self, container: &InspectedContainer) -> bool {
        let named = |pattern: &str| {
            Regex::new(pattern).is_ok_and(|re| re.is_match(container.name()) || re.is_match(&container.name))
        };
        let networks = &container.network_settings.networks;
        let on_network = |wanted: &str| {
            networks
                .iter()
                .any(|(name, n)| name == wanted || (!wanted.is_empty() && n.network_id.starts_with(wanted)))
        };
        self.allows("name", named)
            && self.allows("network", on_network)
            && self.allows("status", |status| container.state.status == status)
    }

    /// `network ls`'s filters: `name` (a regexp), `driver`, `id` (an ID's start).
    pub fn allow_network(&self, network: &InspectedNetwork) -> bool {
        self.allows("name", |pattern| Regex::new(pattern).is_ok_and(|re| re.is_match(&network.name)))
            && self.allows("driver", |driver| network.driver == driver)
            && self.allows("id", |id| network.id.starts_with(id))
    }
}

/// The filters `ps` takes.
pub const PS_FILTERS: [&str; 3] = ["name", "network", "status"];
/// The filters `network ls` takes.
pub const NETWORK_FILTERS: [&str; 3] = ["name", "driver", "id"];

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use serde_json::json;

    use super::*;

    fn container(name: &str, status: &str, networks: serde_json::Value) -> InspectedContainer {
        serde_json::from_value(json!({
            "Id": format!("{name:0<64}").replace(|c: char| !c.is_ascii_hexdigit(), "0"),
            "Name": format!("/{name}"),
            "Created": "2026-11-30T03:00:00.5Z",
            "State": {
                "Status": status,
                "ExitCode": if status == "exited" { 3 } else { 0 },
                "StartedAt": if status == "created" { ZERO_TIME } else { "2026-11-30T03:00:01Z" },
                "FinishedAt": if status == "exited" { "2026-11-30T03:04:58Z" } else { ZERO_TIME },
            },
            "Config": {"Cmd": ["sleep", "1000000000000000"], "Labels": {}},
            "NetworkSettings": {
                "Networks": networks,
                "Ports": {
                    "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                    "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "53"}],
                },
            },
        }))
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn durations_read_as_dockers() {
        let d = |secs: i64| human_duration(SignedDuration::from_secs(secs));
        assert_eq!(d(0), "Less than a second");
        assert_eq!(
            human_duration(SignedDuration::from_millis(-300)),
            "Less than a second",
            "a clock a bit behind"
        );
        assert_eq!(d(1), "1 second");
        assert_eq!(d(59), "59 seconds");
        assert_eq!(d(60), "About a minute");
        assert_eq!(d(119), "About a minute");
        assert_eq!(d(120), "2 minutes");
        assert_eq!(d(59 * 60 + 59), "59 minutes");
        assert_eq!(d(3600), "About an hour");
        assert_eq!(d(3600 + 29 * 60), "About an hour", "hours are rounded");
        assert_eq!(d(3600 + 31 * 60), "2 hours");
        assert_eq!(d(47 * 3600), "47 hours");
        assert_eq!(d(48 * 3600), "2 days");
        assert_eq!(d(14 * 86_400), "2 weeks");
        assert_eq!(d(60 * 86_400), "2 months");
        assert_eq!(d(800 * 86_400), "2 years");
    }

    #[test]
    fn ps_rows_read_as_dockers() {
        let now = at("2026-11-30T03:05:00Z");
        let web =
            container("web", "running", json!({"front": {"NetworkID": "aa"}, "back": {"NetworkID": "bb"}}));
        let row = web.row(now, true);
        assert_eq!(row.id.len(), 12);
        assert_eq!(row.command, "\"sleep 1000000000000…\"", "20 characters, quoted, as Docker's");
        assert_eq!(row.running_for, "4 minutes ago");
        assert_eq!(row.status, "Up 4 minutes");
        assert_eq!(row.state, "running");
        assert_eq!(row.names, "web");
        assert_eq!(row.networks, "back,front");
        assert_eq!(row.ports, "0.0.0.0:53->53/udp, 0.0.0.0:8080->80/tcp");
        assert_eq!(row.image, "");
        let full = web.row(now, false);
        assert_eq!((full.id.len(), full.command.as_str()), (64, "\"sleep 1000000000000000\""), "--no-trunc");
        assert_eq!(container("done", "exited", json!({})).row(now, true).status, "Exited (3) 2 seconds ago");
        assert_eq!(container("new", "created", json!({})).row(now, true).status, "Created");
        assert_eq!(container("gone", "dead", json!({})).row(now, true).status, "Dead");
    }

    #[test]
    fn created_at_is_gos_time_string() {
        // Tests run with the zone the machine has; UTC spelled out keeps this one's.
        let zoned = at("2026-11-30T03:00:00.5Z").to_zoned(TimeZone::UTC);
        assert_eq!(zoned.strftime("%Y-%m-%d %H:%M:%S %z %Z").to_string(), "2026-11-30 03:00:00 +0000 UTC");
        let text = local_time(at("2026-11-30T03:00:00.123Z"));
        assert!(text.contains(":00.123 "), "nanoseconds as Go writes them, trailing zeros cut: {text}");
    }

    #[test]
    fn commands_are_cut_to_20_characters_with_an_ellipsis() {
        assert_eq!(ellipsis("sleep 100", 20), "sleep 100");
        assert_eq!(ellipsis("12345678901234567890", 20), "12345678901234567890", "exactly 20 fits");
        assert_eq!(ellipsis("123456789012345678901", 20), "1234567890123456789…");
        assert_eq!(ellipsis("ééééééééééééééééééééé", 20).chars().count(), 20, "characters, not bytes");
    }

    #[test]
    fn ports_are_grouped_as_dockers() {
        let ports = |json: serde_json::Value| displayable_ports(&serde_json::from_value(json).unwrap());
        assert_eq!(
            ports(json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})),
            "0.0.0.0:8080->80/tcp"
        );
        assert_eq!(
            ports(json!({
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}],
                "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "81"}],
                "83/tcp": [{"HostIp": "0.0.0.0", "HostPort": "83"}],
                "90/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9090"}],
            })),
            "0.0.0.0:80-81->80-81/tcp, 0.0.0.0:83->83/tcp, 127.0.0.1:9090->90/tcp"
        );
        assert_eq!(ports(json!({})), "");
    }

    #[test]
    fn filters_of_one_key_or_and_of_two_keys_and() {
        let web = container("web", "running", json!({"front": {"NetworkID": "aa11"}}));
        let db = container("db", "exited", json!({"back": {"NetworkID": "bb22"}}));
        let pass = |given: &[&str]| -> Vec<String> {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            let filters = Filters::parse(&given, &PS_FILTERS).unwrap();
            [&web, &db]
                .into_iter()
                .filter(|c| filters.allow_container(c))
                .map(|c| c.name().to_string())
                .collect()
        };
        assert_eq!(pass(&[]), ["web", "db"]);
        assert_eq!(pass(&["name=we"]), ["web"], "a regexp matches anywhere, as Docker's");
        assert_eq!(pass(&["name=^/db$"]), ["db"], "the name with its slash too");
        assert_eq!(pass(&["name=^web$", "name=^db$"]), ["web", "db"], "one key: any value");
        assert_eq!(pass(&["name=^web$", "status=exited"]), Vec::<String>::new(), "two keys: all");
        assert_eq!(pass(&["status=exited"]), ["db"]);
        assert_eq!(pass(&["network=front"]), ["web"]);
        assert_eq!(pass(&["network=bb2"]), ["db"], "a network ID's start");
        let err =
            |given: &str| format!("{:#}", Filters::parse(&[given.to_string()], &PS_FILTERS).unwrap_err());
        assert!(err("label=x").contains("filter by name, network, status"), "{}", err("label=x"));
        assert!(err("name").contains("KEY=VALUE"));
        assert!(err("name=[").contains("not a regular expression"));
    }

    #[test]
    fn network_rows_and_filters_read_as_dockers() {
        let bridge: InspectedNetwork = serde_json::from_value(json!({
            "Id": "0123456789abcdef", "Name": "bridge", "Driver": "bridge", "Scope": "local",
            "EnableIPv6": false, "Internal": false, "Created": "2026-11-30T03:00:00Z", "Labels": {"a": "b"},
        }))
        .unwrap();
        let row = bridge.row(true);
        assert_eq!(
            (row.id.as_str(), row.name.as_str(), row.driver.as_str()),
            ("0123456789ab", "bridge", "bridge")
        );
        assert_eq!((row.scope.as_str(), row.ipv6.as_str(), row.labels.as_str()), ("local", "false", "a=b"));
        let filters = |given: &str| Filters::parse(&[given.to_string()], &NETWORK_FILTERS).unwrap();
        assert!(filters("driver=bridge").allow_network(&bridge));
        assert!(!filters("driver=null").allow_network(&bridge));
        assert!(filters("name=^bri").allow_network(&bridge));
        assert!(filters("id=0123").allow_network(&bridge));
    }
}
