// dash.js - presence-dash's page: live data from /events (Server-Sent
// Events), the user lookup through /api/user. No framework; every value
// from the cluster goes into the page as text (textContent), never as HTML.
'use strict';

const FEED_MAX = 200;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function ago(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return ms + ' ms';
  if (ms < 120000) return (ms / 1000).toFixed(1) + ' s';
  if (ms < 7200000) return Math.round(ms / 60000) + ' min';
  return Math.round(ms / 3600000) + ' h';
}
const clock = (ms) => ms > 0 ? new Date(ms).toLocaleTimeString() : '—';
const stamp = (ms) => ms > 0 ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—';

// ---- node cards ----

function spark(label, t, values, now, windowMs) {
  const svgNS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('viewBox', '0 0 300 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const last = values.length ? values[values.length - 1] : 0;
  const max = Math.max(1, ...values);
  svg.setAttribute('aria-label', `${label}: ${last} now, peak ${max} in the last 5 minutes`);
  const line = document.createElementNS(svgNS, 'polyline');
  line.setAttribute('points', values.map((v, i) =>
    `${(300 * (t[i] - (now - windowMs)) / windowMs).toFixed(1)},${(38 - 36 * v / max).toFixed(1)}`).join(' '));
  svg.append(line);
  return el('figure', {class: 'chart'}, el('figcaption', {}, `${label}: ${last}`), svg);
}

function card(n, doc) {
  const lag = n.lag.length ? n.lag.map((l) => `${l.peer}: ${l.behind === null ? 'unknown run' : l.behind}`).join(', ') : '—';
  const ageClass = n.state === 'late' ? 'late' : '';
  const state = n.state;
  const dl = el('dl', {},
    ...(n.state === 'down' ? [el('dt', {}, 'down'), el('dd', {class: 'late'}, n.why)] : []),
    el('dt', {}, 'ready'), el('dd', {}, n.ready ? 'yes' : 'no (warming up)'),
    el('dt', {}, 'devices'), el('dd', {}, n.devices),
    el('dt', {}, 'users'), el('dd', {}, n.users),
    el('dt', {}, 'heartbeat'), el('dd', {class: 'hb ' + ageClass}, ago(n.hb_age_ms) + ' ago'),
    el('dt', {}, 'behind'), el('dd', {class: n.warn && n.alive ? 'late' : ''}, lag),
    el('dt', {}, 'incarnation'), el('dd', {title: String(n.inc)}, stamp(n.inc)),
    el('dt', {}, 'snapshot'), el('dd', {}, n.snapshot_age_ms === null ? 'none yet' : ago(n.snapshot_age_ms) + ' ago'),
    el('dt', {}, 'deltas sent'), el('dd', {}, n.seq));
  const charts = el('div', {class: 'charts'},
    spark('events/s', n.series.t, n.series.events, doc.now, doc.window_ms),
    spark('notifications/s', n.series.t, n.series.notifications, doc.now, doc.window_ms));
  return el('article', {class: 'card', 'data-node': n.node, 'data-state': n.state,
                        'data-warn': String(n.warn),
                        'aria-label': `node ${n.node}: ${state}${n.why ? ' (' + n.why + ')' : ''}`},
    el('h3', {}, n.node, el('span', {class: 'badge', 'data-role': 'state'}, state)), dl, charts);
}

function onNodes(doc) {
  const box = $('#nodes');
  const cards = doc.nodes.map((n) => card(n, doc));
  box.replaceChildren(...(cards.length ? cards : [el('p', {class: 'muted'}, 'no heartbeat yet')]));
  onServers(doc.servers || [], doc.server_timeout_ms);
  const up = doc.nodes.filter((n) => n.alive).length;
  $('#nodes-summary').textContent = `${up} of ${doc.nodes.length} alive · node timeout ${ago(doc.node_timeout_ms)}`;
}

function onServers(list, timeout) {
  $('#servers-none').hidden = list.length > 0;
  $('#servers tbody').replaceChildren(...list.map((s) => el('tr', {'data-server': s.server, 'data-alive': String(s.alive)},
    el('th', {scope: 'row'}, s.server), el('td', {}, s.node),
    el('td', {class: s.alive ? 'status-online' : 'status-busy'}, s.alive ? 'yes' : 'no'),
    el('td', {}, s.connections), el('td', {}, ago(s.last_heard_ms) + ' ago'),
    el('td', {}, s.heartbeats ? `yes (timeout ${ago(timeout)})` : 'no'))));
}

// ---- the cluster view ----

function onCluster(doc) {
  const body = $('#cluster tbody');
  if (!doc.reply || !Array.isArray(doc.reply.nodes)) {
    $('#cluster-from').textContent = doc.error ? `(${doc.error})` : '';
    body.replaceChildren();
    return;
  }
  $('#cluster-from').textContent = `as node ${doc.reply.node} answers, ${clock(doc.at)}`;
  body.replaceChildren(...doc.reply.nodes.map((n) => el('tr', {},
    el('th', {scope: 'row'}, n.node), el('td', {}, n.alive ? 'yes' : 'no'),
    el('td', {}, n.devices), el('td', {}, n.users),
    el('td', {}, n.last_heartbeat < 0 ? 'never' : n.last_heartbeat === 0 ? 'itself' : ago(n.last_heartbeat) + ' ago'),
    el('td', {}, Object.entries(n.vc || {}).map(([k, v]) => `${k}:${v}`).join(' ')))));
}

// ---- the notification feed ----

const seen = [];
function matches(li) {
  const prefix = $('#filter-user').value.trim();
  const status = $('#filter-status').value;
  return li.dataset.user.startsWith(prefix) && (!status || li.dataset.status === status);
}
function refilter() {
  for (const li of $('#feed').children) li.hidden = !matches(li);
}
function onNote(n) {
  const custom = [n.emoji, n.text].filter(Boolean).join(' ');
  const li = el('li', {'data-user': n.user, 'data-status': n.status},
    el('span', {class: 'time'}, clock(n.ts)), el('span', {class: 'user'}, n.user),
    el('span', {class: 'status-' + n.status}, n.status), el('span', {class: 'custom'}, custom));
  li.hidden = !matches(li);
  const feed = $('#feed');
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  const now = Date.now();
  seen.push(now);
  while (seen.length && seen[0] < now - 10000) seen.shift();
  $('#feed-rate').textContent = `${(seen.length / 10).toFixed(1)}/s over 10 s`;
}

// ---- the user lookup ----

function view(title, v) {
  if (!v) return el('div', {}, el('h3', {}, title), el('p', {class: 'error'}, 'no answer'));
  const custom = [v.emoji, v.text].filter(Boolean).join(' ') || '—';
  return el('div', {'data-view': title}, el('h3', {}, title), el('dl', {},
    // stale: part of it comes from a node not heard from lately, so it is
    // the last known state, not a sure one (docs/protocol.md section 4).
    el('dt', {}, 'status'), el('dd', {class: 'status-' + v.status, 'data-stale': String(v.stale === true)},
      v.stale === true ? `${v.status} (last known)` : v.status),
    el('dt', {}, 'custom'), el('dd', {}, custom),
    el('dt', {}, 'expires'), el('dd', {}, stamp(v.expires_at)),
    el('dt', {}, 'last seen'), el('dd', {}, stamp(v.last_seen)),
    el('dt', {}, 'devices'), el('dd', {}, v.devices)));
}

async function lookup(ev) {
  ev.preventDefault();
  const user = $('#lookup-user').value.trim();
  const out = $('#lookup-result');
  out.replaceChildren(el('p', {class: 'muted'}, 'asking…'));
  let doc;
  try {
    const r = await fetch('/api/user?user=' + encodeURIComponent(user));
    doc = await r.json();
    if (!r.ok) throw new Error(doc.error || r.statusText);
  } catch (e) {
    out.replaceChildren(el('p', {class: 'error'}, 'lookup failed: ' + e.message));
    return;
  }
  const devices = doc.devices || [];
  const rows = devices.map((d) => el('tr', {class: 'device', 'data-conn': d.conn},
    el('td', {}, d.conn), el('td', {}, d.server), el('td', {}, d.node), el('td', {}, d.device),
    el('td', {}, d.state), el('td', {}, stamp(d.connected_at)), el('td', {}, stamp(d.last_active))));
  const table = el('div', {class: 'scroll'}, el('table', {},
    el('caption', {'data-stale': String(doc.stale === true)}, `${devices.length} device(s) of ${doc.user}`
      + (typeof doc.as_of === 'number' ? `, as of ${stamp(doc.as_of)}` : '')
      + (doc.stale === true ? ' (last known: a node holding some is not heard from lately)' : '')),
    el('thead', {}, el('tr', {}, ...['conn', 'server', 'node', 'device', 'state', 'connected at', 'last active']
      .map((h) => el('th', {scope: 'col'}, h)))),
    el('tbody', {}, ...rows)));
  const ag = doc.agreement || {nodes: []};
  const letters = ag.nodes.map((a) => `${a.node}: ${a.answer ? String.fromCharCode(64 + a.answer) : 'no answer'}`).join(', ');
  const verdict = ag.agree === true ? `all ${ag.nodes.length} nodes agree`
    : ag.agree === false ? 'the nodes DIFFER' : 'not every node answered';
  const agreeEl = el('p', {id: 'agreement', 'data-agree': String(ag.agree)},
    el('strong', {class: ag.agree === false ? 'error' : ''}, verdict),
    ag.nodes.length ? ` (own view and devices, asked of each node: ${letters})` : '');
  out.replaceChildren(el('div', {class: 'views'}, view('public view', doc.public), view('own view', doc.own)),
    agreeEl, table, ...doc.errors.map((e) => el('p', {class: 'error'}, e)));
}

// ---- the stream ----

function connect() {
  const es = new EventSource('/events');
  const conn = $('#conn');
  es.onopen = () => { conn.dataset.conn = 'live'; conn.textContent = 'live'; };
  es.onerror = () => { conn.dataset.conn = 'lost'; conn.textContent = 'connection lost: retrying…'; };
  const on = (name, fn) => es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  on('nodes', onNodes);
  on('cluster', onCluster);
  on('note', onNote);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#feed-filter').addEventListener('input', refilter);
  $('#feed-filter').addEventListener('submit', (e) => e.preventDefault());
  $('#lookup').addEventListener('submit', lookup);
  connect();
});
