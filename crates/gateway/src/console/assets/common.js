// Enclave console: what every page's script shares. Every call is an API call under the
// signed-in user's session (state-changing ones carry the page's anti-forgery token); labels,
// banners and portion marks come from the server's label code (`/console/label`), never from
// this script. Text is written with textContent only.
'use strict';

window.Enclave = (function () {
  const csrf = document.querySelector('meta[name="enclave-csrf"]').content;
  let high = document.getElementById('banner-top').dataset.label;
  const risen = [];

  // The join of `labels`, its banner, portion mark and banner class, from the server. The
  // scheme cannot change under a loaded page, so each answer is kept for the page's life: a
  // label asked for again (the working label at every send) costs no round trip.
  const known = new Map();
  function label(labels) {
    const q = new URLSearchParams();
    for (const l of labels) if (l) q.append('l', l);
    const key = q.toString();
    let answer = known.get(key);
    if (!answer) {
      answer = fetch('/console/label?' + key, { headers: { Accept: 'application/json' } }).then((r) => {
        if (!r.ok) throw new Error('the label service answered ' + r.status);
        return r.json();
      });
      // A failed lookup is not kept: the next call asks again.
      answer.catch(() => known.delete(key));
      known.set(key, answer);
    }
    return answer;
  }

  // The page's banners show the highest label it has shown; they only ever rise. Raises run one
  // after another, each joining with the one before, so one that answers late cannot lower them.
  let raising = Promise.resolve();
  function raise(to) {
    const next = raising.then(() => raiseNow(to));
    raising = next.catch(() => {});
    return next;
  }

  async function raiseNow(to) {
    const info = await label([high, to]);
    high = info.banner;
    for (const id of ['banner-top', 'banner-bottom']) {
      const b = document.getElementById(id);
      b.textContent = info.banner;
      b.dataset.label = info.banner;
      b.className = 'banner ' + (id === 'banner-top' ? 'top' : 'bottom') + ' ' + info.class;
    }
    document.body.dataset.label = info.banner;
    for (const f of risen) f(info);
    return info;
  }

  // A call to the API: the JSON answer, or an Error carrying the API's message and code.
  async function api(method, path, body, headers) {
    const init = { method, headers: { Accept: 'application/json', ...(headers || {}) } };
    if (method !== 'GET') init.headers['Enclave-CSRF'] = csrf;
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const json = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error((json.error && json.error.message) || ('the server answered ' + r.status));
      e.code = json.error && json.error.code;
      throw e;
    }
    return json;
  }

  // Appends a table cell holding `value` as text.
  function cell(row, value) {
    const td = document.createElement('td');
    td.textContent = value == null ? '' : String(value);
    row.append(td);
    return td;
  }

  const day = (unix) => (unix ? new Date(unix * 1000).toISOString().slice(0, 10) : '');

  return {
    csrf, label, raise, api, cell, day,
    high: () => high,
    onRaise: (f) => risen.push(f),
  };
})();
