//! The TOML files providers write: `OFFERING.toml` and `NODE.toml`.
//! Unknown keys are refused; every error names the field and the reason.
//!
//! `OFFERING.toml`:
//! ```toml
//! name = "gp-4c-16g"                  # shown to developers
//! node = "PRINCIPAL"                  # the node that serves it
//! price_e9s_per_hour = 120000000      # 0.12 DCT per hour
//! min_hours = 1
//! max_hours = 720
//! confidential = "none"               # none | sev-snp | tdx
//! region = "eu-central"
//! country = "DE"                      # ISO 3166-1 alpha-2
//!
//! [resources]
//! vcpus = 4
//! ram_gib = 16
//! storage_gib = 200
//! bandwidth_mbps = 1000
//!
//! [gpu]                               # optional
//! model = "H100"
//! count = 1
//! memory_gib = 80
//! ```
//!
//! `NODE.toml` (what a provider declares for a node it registers by hand;
//! the appliance measures these itself):
//! ```toml
//! cpu_model = "AMD EPYC 9654"
//! vcpus = 96
//! ram_gib = 768
//! storage_gib = 7680
//! bandwidth_mbps = 10000
//! confidential = "sev-snp"
//! region = "eu-central"
//! country = "DE"
//! image_hash = ""                     # SHA-256 of the appliance image, hex
//!
//! [[gpus]]
//! model = "H100"
//! count = 4
//! memory_gib = 80
//! ```

use candid::Principal;
use dc_ledger_core::{Confidential, GpuSpec, NodeCapabilities, OfferingSpec};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferingFile {
    name: String,
    node: String,
    price_e9s_per_hour: u64,
    min_hours: u32,
    max_hours: u32,
    #[serde(default = "none")]
    confidential: String,
    region: String,
    country: String,
    resources: ResourcesFile,
    gpu: Option<GpuFile>,
}

fn none() -> String {
    "none".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesFile {
    vcpus: u32,
    ram_gib: u32,
    #[serde(default)]
    storage_gib: u32,
    #[serde(default)]
    bandwidth_mbps: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    model: String,
    count: u32,
    #[serde(default)]
    memory_gib: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    cpu_model: String,
    vcpus: u32,
    ram_gib: u32,
    storage_gib: u32,
    bandwidth_mbps: u32,
    #[serde(default = "none")]
    confidential: String,
    region: String,
    country: String,
    #[serde(default)]
    image_hash: String,
    #[serde(default)]
    gpus: Vec<GpuFile>,
}

fn field_err(path: &str, field: &str, reason: impl std::fmt::Display) -> String {
    format!("{path}: {field}: {reason}")
}

fn confidential(path: &str, value: &str) -> Result<Confidential, String> {
    value
        .parse()
        .map_err(|e| field_err(path, "confidential", e))
}

fn country(path: &str, value: &str) -> Result<String, String> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(value.to_ascii_uppercase())
    } else {
        Err(field_err(
            path,
            "country",
            format!("expected a two-letter ISO 3166-1 code like \"DE\", found {value:?}"),
        ))
    }
}

fn parse_toml<T: for<'de> Deserialize<'de>>(path: &str, text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        // toml's message names the key or line; keep it on one line.
        format!(
            "{path}: {}",
            e.to_string()
                .replace('\n', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        )
    })
}

/// Parses `OFFERING.toml`.
pub fn parse_offering(path: &str, text: &str) -> Result<OfferingSpec, String> {
    let f: OfferingFile = parse_toml(path, text)?;
    let node = Principal::from_text(&f.node).map_err(|e| {
        field_err(
            path,
            "node",
            format!("{:?} is not a principal: {e}", f.node),
        )
    })?;
    if f.name.trim().is_empty() {
        return Err(field_err(path, "name", "must not be empty"));
    }
    if f.price_e9s_per_hour == 0 {
        return Err(field_err(path, "price_e9s_per_hour", "must be positive"));
    }
    if f.min_hours == 0 {
        return Err(field_err(path, "min_hours", "must be at least 1"));
    }
    if f.max_hours < f.min_hours {
        return Err(field_err(
            path,
            "max_hours",
            format!("{} is below min_hours {}", f.max_hours, f.min_hours),
        ));
    }
    if f.resources.vcpus == 0 {
        return Err(field_err(path, "resources.vcpus", "must be at least 1"));
    }
    if f.resources.ram_gib == 0 {
        return Err(field_err(path, "resources.ram_gib", "must be at least 1"));
    }
    if let Some(g) = &f.gpu {
        if g.count == 0 {
            return Err(field_err(path, "gpu.count", "must be at least 1"));
        }
        if g.model.trim().is_empty() {
            return Err(field_err(path, "gpu.model", "must not be empty"));
        }
    }
    if f.region.trim().is_empty() {
        return Err(field_err(path, "region", "must not be empty"));
    }
    Ok(OfferingSpec {
        node,
        name: f.name,
        vcpus: f.resources.vcpus,
        ram_gib: f.resources.ram_gib,
        storage_gib: f.resources.storage_gib,
        bandwidth_mbps: f.resources.bandwidth_mbps,
        gpu: f.gpu.map(|g| GpuSpec {
            model: g.model,
            count: g.count,
            memory_gib: g.memory_gib,
        }),
        confidential: confidential(path, &f.confidential)?,
        region: f.region,
        country: country(path, &f.country)?,
        price_e9s_per_hour: f.price_e9s_per_hour,
        min_hours: f.min_hours,
        max_hours: f.max_hours,
    })
}

/// Parses `NODE.toml`.
pub fn parse_node(path: &str, text: &str) -> Result<NodeCapabilities, String> {
    let f: NodeFile = parse_toml(path, text)?;
    if f.vcpus == 0 {
        return Err(field_err(path, "vcpus", "must be at least 1"));
    }
    if f.ram_gib == 0 {
        return Err(field_err(path, "ram_gib", "must be at least 1"));
    }
    Ok(NodeCapabilities {
        cpu_model: f.cpu_model,
        vcpus: f.vcpus,
        ram_gib: f.ram_gib,
        storage_gib: f.storage_gib,
        bandwidth_mbps: f.bandwidth_mbps,
        gpus: f
            .gpus
            .into_iter()
            .map(|g| GpuSpec {
                model: g.model,
                count: g.count,
                memory_gib: g.memory_gib,
            })
            .collect(),
        confidential: confidential(path, &f.confidential)?,
        region: f.region,
        country: country(path, &f.country)?,
        image_hash: f.image_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERING: &str = r#"
name = "gp-4c-16g"
node = "2vxsx-fae"
price_e9s_per_hour = 120000000
min_hours = 1
max_hours = 720
confidential = "sev-snp"
region = "eu-central"
country = "de"

[resources]
vcpus = 4
ram_gib = 16
storage_gib = 200
bandwidth_mbps = 1000

[gpu]
model = "H100"
count = 1
memory_gib = 80
"#;

    #[test]
    fn parses_the_documented_example() {
        let o = parse_offering("o.toml", OFFERING).unwrap();
        assert_eq!(o.vcpus, 4);
        assert_eq!(o.confidential, Confidential::SevSnp);
        assert_eq!(o.country, "DE");
        assert_eq!(o.gpu.unwrap().model, "H100");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (OFFERING.replace("2vxsx-fae", "nope"), "node"),
            (
                OFFERING.replace("max_hours = 720", "max_hours = 0"),
                "max_hours",
            ),
            (OFFERING.replace("\"sev-snp\"", "\"sgx\""), "confidential"),
            (
                OFFERING.replace("country = \"de\"", "country = \"Germany\""),
                "country",
            ),
            (
                OFFERING.replace("vcpus = 4", "vcpus = 0"),
                "resources.vcpus",
            ),
            (OFFERING.replace("count = 1", "count = 0"), "gpu.count"),
            (
                OFFERING.replace("price_e9s_per_hour = 120000000", "price_e9s_per_hour = -1"),
                "price_e9s_per_hour",
            ),
            (format!("{OFFERING}\ncolour = \"red\"\n"), "colour"),
            (OFFERING.replace("region = \"eu-central\"\n", ""), "region"),
        ];
        for (text, field) in cases {
            let err = parse_offering("o.toml", &text).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
