//! `<network>`: libvirt's virtual network XML (`formatnetwork.rst`) to and from [`NetworkDef`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::domain::read_name;
use super::reader::El;
use super::values::{
    canonical_mac, canonical_uuid, enum_name, generate_uuid, ip_address, netmask_prefix, on_off,
    one_of, parse_enum, positive_u32, u32_value,
};
use super::writer::{Attrs, Writer};
use super::{Extras, FormatOptions, ParseOptions, STRICT, parse_root};
use crate::Error;
use crate::bindings::types::{DhcpHost, ForwardMode, NetworkDef, NetworkIp};

/// A network definition with everything the model does not cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedNetwork {
    /// The modelled part.
    pub def: NetworkDef,
    /// The rest, written back by [`format_network`].
    pub extras: Extras,
}

impl ParsedNetwork {
    /// A network with nothing beyond the model.
    pub fn new(def: NetworkDef) -> Self {
        ParsedNetwork {
            def,
            extras: Extras::default(),
        }
    }

    /// Paths of the elements and attributes virtwasm does not interpret, for `--validate`.
    pub fn unknown_items(&self) -> Vec<String> {
        self.extras.unknown_items()
    }
}

const FORWARD_MODES: &[(&str, ForwardMode)] = &[
    ("none", ForwardMode::None),
    ("nat", ForwardMode::Nat),
    ("route", ForwardMode::Route),
    ("open", ForwardMode::Open),
    ("bridge", ForwardMode::Bridge),
    ("private", ForwardMode::Private),
    ("vepa", ForwardMode::Vepa),
    ("passthrough", ForwardMode::Passthrough),
    ("hostdev", ForwardMode::Hostdev),
];
const FAMILIES: &[&str] = &["ipv4", "ipv6"];

/// Reads a network definition, filling libvirt's defaults.
pub fn parse_network(xml: &str) -> Result<ParsedNetwork, Error> {
    parse_network_with(xml, &ParseOptions::default())
}

/// Reads a network definition and refuses anything outside the modelled subset, naming it.
pub fn parse_network_strict(xml: &str) -> Result<ParsedNetwork, Error> {
    parse_network_with(xml, &STRICT)
}

/// Reads a network definition with explicit options.
pub fn parse_network_with(xml: &str, options: &ParseOptions) -> Result<ParsedNetwork, Error> {
    let (mut def, extras) = parse_root(xml, "network", options, read_network)?;
    if options.fill_defaults {
        fill_network_defaults(&mut def);
    }
    Ok(ParsedNetwork { def, extras })
}

/// Fills what libvirt fills on define: a uuid, and spanning-tree on with no delay for the
/// bridges libvirt itself creates (isolated, NAT, routed and open networks).
pub fn fill_network_defaults(n: &mut NetworkDef) {
    if n.uuid.is_empty() {
        n.uuid = generate_uuid();
    }
    if owns_bridge(n.forward) {
        n.stp.get_or_insert(true);
        n.delay.get_or_insert(0);
    }
}

/// Whether libvirt creates the bridge itself (and so writes its stp and delay settings).
fn owns_bridge(forward: Option<ForwardMode>) -> bool {
    matches!(
        forward,
        None | Some(ForwardMode::Nat) | Some(ForwardMode::Route) | Some(ForwardMode::Open)
    )
}

/// Writes a network as `virsh net-dumpxml` does.
pub fn format_network(n: &ParsedNetwork, _options: &FormatOptions) -> String {
    let def = &n.def;
    let mut w = Writer::new(&n.extras);
    w.open("/network", "network", Attrs::new());
    w.text("/network/name", "name", Attrs::new(), &def.name);
    if !def.uuid.is_empty() {
        w.text("/network/uuid", "uuid", Attrs::new(), &def.uuid);
    }
    write_forward(&mut w, def);
    let bridge = Attrs::new()
        .opt("name", def.bridge.as_ref())
        .opt("stp", def.stp.map(|on| if on { "on" } else { "off" }))
        .opt("delay", def.delay);
    if def.bridge.is_some() || def.stp.is_some() || def.delay.is_some() {
        w.leaf("/network/bridge", "bridge", bridge);
    } else if w.has_extras("/network/bridge") {
        w.leaf("/network/bridge", "bridge", Attrs::new());
    }
    if def.mtu.is_some() || w.has_extras("/network/mtu") {
        w.leaf("/network/mtu", "mtu", Attrs::new().opt("size", def.mtu));
    }
    if let Some(mac) = &def.mac {
        w.leaf("/network/mac", "mac", Attrs::new().add("address", mac));
    }
    if def.domain_name.is_some() || w.has_extras("/network/domain") {
        let attrs = Attrs::new().opt("name", def.domain_name.as_ref());
        w.leaf("/network/domain", "domain", attrs);
    }
    write_dns(&mut w, &def.dns_hosts);
    for (i, ip) in def.ips.iter().enumerate() {
        write_ip(&mut w, ip, &format!("/network/ip[{}]", i + 1));
    }
    w.close();
    w.finish()
}

fn read_network(root: &mut El<'_>) -> Result<NetworkDef, Error> {
    // How many guests use the network: state of a running network, not definition.
    root.attr("connections");
    let name = read_name(root)?;
    let uuid = match root.child("uuid") {
        Some(el) => el.text_with(canonical_uuid)?,
        None => String::new(),
    };
    let (forward, forward_dev) = match root.child("forward") {
        Some(el) => read_forward(el)?,
        None => (None, None),
    };
    let (mut bridge, mut stp, mut delay) = (None, None, None);
    if let Some(mut el) = root.child("bridge") {
        bridge = el.attr_string("name");
        stp = el.attr_with("stp", on_off)?;
        delay = el.attr_with("delay", u32_value)?;
    }
    let mac = match root.child("mac") {
        Some(mut el) => Some(
            el.required_attr("address")
                .and_then(|a| canonical_mac(a.value, true).map_err(|m| el.attr_error(&a, &m)))?,
        ),
        None => None,
    };
    let mtu = match root.child("mtu") {
        Some(mut el) => el.attr_with("size", positive_u32)?,
        None => None,
    };
    let domain_name = root
        .child("domain")
        .and_then(|mut el| el.attr_string("name"));
    let dns_hosts = match root.child("dns") {
        Some(el) => read_dns(el)?,
        None => Vec::new(),
    };
    let ips = root
        .children("ip")
        .into_iter()
        .map(read_ip)
        .collect::<Result<_, _>>()?;
    Ok(NetworkDef {
        name,
        uuid,
        forward,
        forward_dev,
        bridge,
        stp,
        delay,
        mac,
        mtu,
        domain_name,
        ips,
        dns_hosts,
    })
}

type Forward = (Option<ForwardMode>, Option<String>);

/// `<forward>`: the mode defaults to NAT; the device is `dev=` or else the first
/// `<interface dev=...>`, which libvirt also writes back as both.
fn read_forward(mut el: El<'_>) -> Result<Forward, Error> {
    let mode = el
        .attr_with("mode", |v| parse_enum(v, FORWARD_MODES, "forward mode"))?
        .unwrap_or(ForwardMode::Nat);
    let mut dev = el.attr_string("dev");
    let first_interface = el.el.elements().find(|c| c.name == "interface");
    let interface_dev = first_interface
        .and_then(|i| i.attrs.iter().find(|a| a.name == "dev"))
        .map(|a| a.value.clone());
    if interface_dev.is_some() && (dev.is_none() || dev == interface_dev) {
        if let Some(mut interface) = el.child("interface") {
            interface.attr("dev");
        }
        dev = dev.or(interface_dev);
    }
    let mode = (mode != ForwardMode::None).then_some(mode);
    Ok((mode, dev))
}

fn write_forward(w: &mut Writer<'_>, def: &NetworkDef) {
    let path = "/network/forward";
    let mode = match def.forward {
        Some(mode) => enum_name(FORWARD_MODES, &mode),
        None if w.has_extras(path) => "none",
        None => return,
    };
    w.open(
        path,
        "forward",
        Attrs::new()
            .opt("dev", def.forward_dev.as_ref())
            .add("mode", mode),
    );
    if let Some(dev) = &def.forward_dev {
        w.leaf(
            "/network/forward/interface",
            "interface",
            Attrs::new().add("dev", dev),
        );
    }
    w.close();
}

fn read_dns(mut dns: El<'_>) -> Result<Vec<(String, Vec<String>)>, Error> {
    let mut hosts = Vec::new();
    for mut host in dns.children("host") {
        let ip = host.required_attr("ip").and_then(|a| {
            ip_address(a.value)
                .map(|_| a.value.trim().to_string())
                .map_err(|m| host.attr_error(&a, &m))
        })?;
        let names = host.children("hostname").iter().map(El::text).collect();
        hosts.push((ip, names));
    }
    Ok(hosts)
}

fn write_dns(w: &mut Writer<'_>, hosts: &[(String, Vec<String>)]) {
    let path = "/network/dns";
    if hosts.is_empty() && !w.has_extras(path) {
        return;
    }
    w.open(path, "dns", Attrs::new());
    for (i, (ip, names)) in hosts.iter().enumerate() {
        let host_path = format!("{path}/host[{}]", i + 1);
        w.open(&host_path, "host", Attrs::new().add("ip", ip));
        for (j, name) in names.iter().enumerate() {
            w.text(
                &format!("{host_path}/hostname[{}]", j + 1),
                "hostname",
                Attrs::new(),
                name,
            );
        }
        w.close();
    }
    w.close();
}

fn read_ip(mut el: El<'_>) -> Result<NetworkIp, Error> {
    let family = el.attr_with("family", |v| one_of(v, FAMILIES, "address family"))?;
    let address_attr = el.required_attr("address")?;
    let address = ip_address(address_attr.value).map_err(|m| el.attr_error(&address_attr, &m))?;
    let family_mismatch = matches!(
        (family.as_deref(), address),
        (Some("ipv4"), IpAddr::V6(_)) | (Some("ipv6"), IpAddr::V4(_))
    );
    if family_mismatch {
        let message = format!(
            "address does not belong to family '{}'",
            family.as_deref().unwrap_or_default()
        );
        return Err(el.attr_error(&address_attr, &message));
    }
    let netmask_attr = el.attr("netmask");
    let prefix_attr = el.attr_with("prefix", |v| {
        let max = if address.is_ipv4() { 32 } else { 128 };
        match u32_value(v) {
            Ok(p) if p <= max => Ok(p),
            _ => Err(format!(
                "invalid prefix '{v}' (expected an integer from 0 to {max})"
            )),
        }
    })?;
    let (prefix, netmask) = match netmask_attr {
        Some(mask) if prefix_attr.is_some() => {
            return Err(el.attr_error(&mask, "an address cannot have both a prefix and a netmask"));
        }
        Some(mask) if address.is_ipv6() => {
            return Err(el.attr_error(&mask, "a netmask is not supported for IPv6 (use prefix)"));
        }
        Some(mask) => {
            let prefix = netmask_prefix(mask.value).map_err(|m| el.attr_error(&mask, &m))?;
            (Some(prefix), Some(mask.value.trim().to_string()))
        }
        None => (prefix_attr, None),
    };
    let (mut dhcp_ranges, mut dhcp_hosts) = (Vec::new(), Vec::new());
    if let Some(mut dhcp) = el.child("dhcp") {
        for mut range in dhcp.children("range") {
            let start = read_ip_attr(&mut range, "start")?;
            let end = read_ip_attr(&mut range, "end")?;
            dhcp_ranges.push((start, end));
        }
        for host in dhcp.children("host") {
            dhcp_hosts.push(read_dhcp_host(host)?);
        }
    }
    Ok(NetworkIp {
        family,
        address: address_attr.value.trim().to_string(),
        prefix,
        netmask,
        dhcp_ranges,
        dhcp_hosts,
    })
}

fn read_ip_attr(el: &mut El<'_>, name: &str) -> Result<String, Error> {
    let attr = el.required_attr(name)?;
    ip_address(attr.value).map_err(|m| el.attr_error(&attr, &m))?;
    Ok(attr.value.trim().to_string())
}

fn read_dhcp_host(mut host: El<'_>) -> Result<DhcpHost, Error> {
    let mac = host.attr_with("mac", |v| canonical_mac(v, true))?;
    let name = host.attr_string("name");
    let ip = read_ip_attr(&mut host, "ip")?;
    Ok(DhcpHost { mac, name, ip })
}

fn write_ip(w: &mut Writer<'_>, ip: &NetworkIp, path: &str) {
    let mut attrs = Attrs::new()
        .opt("family", ip.family.as_ref())
        .add("address", &ip.address);
    attrs = match &ip.netmask {
        Some(mask) => attrs.add("netmask", mask),
        None => attrs.opt("prefix", ip.prefix),
    };
    w.open_never_empty(path, "ip", attrs);
    let dhcp = format!("{path}/dhcp");
    if !ip.dhcp_ranges.is_empty() || !ip.dhcp_hosts.is_empty() || w.has_extras(&dhcp) {
        w.open(&dhcp, "dhcp", Attrs::new());
        for (i, (start, end)) in ip.dhcp_ranges.iter().enumerate() {
            let attrs = Attrs::new().add("start", start).add("end", end);
            w.leaf(&format!("{dhcp}/range[{}]", i + 1), "range", attrs);
        }
        for (i, host) in ip.dhcp_hosts.iter().enumerate() {
            let attrs = Attrs::new()
                .opt("mac", host.mac.as_ref())
                .opt("name", host.name.as_ref())
                .add("ip", &host.ip);
            w.leaf(&format!("{dhcp}/host[{}]", i + 1), "host", attrs);
        }
        w.close();
    }
    w.close();
}
