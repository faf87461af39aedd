// The administration page: each table is one `/v1/admin` (or `/v1/usage`) call under the
// signed-in administrator's session; the API decides what they may see and do.
'use strict';

(function () {
  if (!document.getElementById('tenants')) return;
  const { api, cell, day } = window.Enclave;
  const status = document.getElementById('admin-status');
  const svg = 'http://www.w3.org/2000/svg';
  const limits = (l) => Object.entries(l || {}).filter(([, v]) => v != null).map(([k, v]) => `${k.replace(/_/g, ' ')} ${v}`).join(', ') || 'none';
  let names = new Map();

  async function table(id, path, row) {
    const body = document.getElementById(id);
    try {
      const list = await api('GET', path);
      body.replaceChildren(...list.data.map((item) => { const tr = document.createElement('tr'); row(tr, item); return tr; }));
      return list.data;
    } catch (e) {
      const tr = document.createElement('tr');
      const td = cell(tr, e.message);
      td.colSpan = 8;
      body.replaceChildren(tr);
      return [];
    }
  }

  // Tokens per day as bars: one SVG rectangle per day, scaled to the busiest day.
  function chart(rows) {
    const el = document.getElementById('usage-chart');
    const days = new Map();
    for (const r of rows) days.set(r.day, (days.get(r.day) || 0) + r.input_tokens + r.output_tokens);
    const entries = [...days.entries()].sort();
    const max = Math.max(1, ...entries.map(([, v]) => v));
    const width = 720;
    const height = 180;
    const bar = Math.min(40, Math.max(4, Math.floor((width - 40) / Math.max(1, entries.length)) - 4));
    const nodes = [];
    entries.forEach(([d, v], i) => {
      const h = Math.round((v / max) * (height - 30));
      const rect = document.createElementNS(svg, 'rect');
      rect.setAttribute('x', String(30 + i * (bar + 4)));
      rect.setAttribute('y', String(height - 20 - h));
      rect.setAttribute('width', String(bar));
      rect.setAttribute('height', String(h));
      rect.setAttribute('class', 'bar');
      const title = document.createElementNS(svg, 'title');
      title.textContent = `${d}: ${v} tokens`;
      rect.append(title);
      const label = document.createElementNS(svg, 'text');
      label.setAttribute('x', String(30 + i * (bar + 4)));
      label.setAttribute('y', String(height - 5));
      label.setAttribute('class', 'axis');
      label.textContent = d.slice(5);
      nodes.push(rect, label);
    });
    el.replaceChildren(...nodes);
    el.dataset.days = String(entries.length);
  }

  async function keys() {
    const manage = !!document.getElementById('new-key');
    const data = await table('keys', '/v1/admin/keys', (tr, k) => {
      cell(tr, k.id);
      cell(tr, k.name);
      cell(tr, k.role);
      cell(tr, k.clearance);
      cell(tr, k.user);
      cell(tr, day(k.created_at));
      cell(tr, day(k.revoked_at));
      if (manage) {
        const td = document.createElement('td');
        if (!k.revoked_at) {
          const b = document.createElement('button');
          b.type = 'button';
          b.textContent = 'Revoke';
          b.className = 'revoke';
          b.addEventListener('click', async () => {
            try {
              await api('DELETE', '/v1/admin/keys/' + encodeURIComponent(k.id));
              status.textContent = `Key ${k.id} revoked.`;
              await keys();
            } catch (e) { status.textContent = e.message; }
          });
          td.append(b);
        }
        tr.append(td);
      }
    });
    for (const k of data) names.set(k.id, k.name ? `${k.name} (key)` : `key ${k.id}`);
  }

  async function load() {
    status.textContent = 'Loading…';
    await table('tenants', '/v1/admin/tenants', (tr, t) => {
      cell(tr, t.name); cell(tr, t.default_label); cell(tr, t.ceiling);
      cell(tr, limits(t.quota.tenant)); cell(tr, limits(t.quota.key)); cell(tr, day(t.created_at));
    });
    names = new Map();
    const users = await table('users', '/v1/admin/users', (tr, u) => {
      cell(tr, u.name); cell(tr, u.role); cell(tr, u.clearance); cell(tr, day(u.created_at)); cell(tr, day(u.disabled_at));
    });
    for (const u of users) names.set(u.id, u.name);
    await keys();
    const usage = await table('usage', '/v1/usage?by=key', (tr, r) => {
      cell(tr, r.day); cell(tr, r.model); cell(tr, names.get(r.key_id) || r.key_id);
      cell(tr, r.requests); cell(tr, r.input_tokens); cell(tr, r.output_tokens);
    });
    chart(usage);
    await table('deployments', '/v1/admin/deployments', (tr, d) => {
      cell(tr, d.name); cell(tr, d.model); cell(tr, d.backend); cell(tr, d.accreditation); cell(tr, d.jurisdiction);
      cell(tr, d.breaker).className = 'breaker ' + d.breaker;
    });
    await table('models', '/v1/admin/models', (tr, m) => {
      cell(tr, m.id); cell(tr, m.kind); cell(tr, m.source);
      cell(tr, m.files.map(([name, hash]) => `${name}  sha256:${hash}`).join('\n')).className = 'hash';
    });
    status.textContent = '';
  }

  const form = document.getElementById('new-key');
  if (form) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = {
        name: document.getElementById('key-name').value.trim() || undefined,
        role: document.getElementById('key-role').value,
        clearance: document.getElementById('key-clearance').value,
        user: document.getElementById('key-user').value.trim() || undefined,
      };
      try {
        const key = await api('POST', '/v1/admin/keys', body);
        document.getElementById('secret-value').textContent = key.secret;
        document.getElementById('new-secret').hidden = false;
        status.textContent = `Key ${key.id} created.`;
        form.reset();
        await keys();
      } catch (e) {
        status.textContent = e.message;
      }
    });
  }
  load();
})();
