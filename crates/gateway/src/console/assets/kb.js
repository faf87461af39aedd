// The knowledge-base page: list and create, upload files and folders (each file its own call,
// with progress and its own error), documents with status and labels, and search whose labelled
// passages raise the page's banner.
'use strict';

(function () {
  const { api, cell, label, raise, csrf } = window.Enclave;
  const status = document.getElementById('kb-status');
  const open = document.getElementById('kb-open');
  let current = null;
  let polling = null;

  async function list() {
    const body = document.getElementById('kbs');
    try {
      const kbs = await api('GET', '/v1/knowledge-bases');
      body.replaceChildren(...kbs.data.map((k) => {
        const tr = document.createElement('tr');
        cell(tr, k.name);
        cell(tr, k.max_label);
        cell(tr, k.documents.ready);
        cell(tr, k.documents.queued + k.documents.indexing);
        cell(tr, k.documents.failed);
        cell(tr, k.chunks);
        const td = document.createElement('td');
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = 'Open ' + k.name;
        b.className = 'open-kb';
        b.addEventListener('click', () => show(k));
        td.append(b);
        tr.append(td);
        return tr;
      }));
      // The status line keeps what the person last did (an upload's result); only an empty list
      // is worth saying here.
      if (!kbs.data.length) status.textContent = 'No knowledge base yet.';
    } catch (e) {
      status.textContent = e.message;
    }
  }

  async function documents() {
    if (!current) return;
    const docs = await api('GET', `/v1/knowledge-bases/${encodeURIComponent(current.id)}/documents`);
    document.getElementById('documents').replaceChildren(...docs.data.map((d) => {
      const tr = document.createElement('tr');
      tr.dataset.status = d.status;
      cell(tr, d.name);
      cell(tr, d.label);
      cell(tr, d.status);
      cell(tr, d.chunks);
      cell(tr, d.bytes);
      cell(tr, d.error);
      return tr;
    }));
    // Ingestion runs in the background: look again while anything is waiting.
    clearTimeout(polling);
    if (docs.data.some((d) => d.status === 'queued' || d.status === 'indexing')) {
      polling = setTimeout(() => documents().catch(() => {}), 1000);
    } else {
      await list();
    }
  }

  async function show(k) {
    current = k;
    open.hidden = false;
    document.getElementById('kb-open-title').textContent = `Documents of ${k.name}`;
    document.getElementById('passages').replaceChildren();
    document.getElementById('upload-results').replaceChildren();
    await documents();
  }

  // One file, one multipart call, so each file gets its own answer; progress over all bytes.
  function send(file, labelText, done) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append('label', labelText);
      form.append('file', file, file.webkitRelativePath || file.name);
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `/v1/knowledge-bases/${encodeURIComponent(current.id)}/documents`);
      xhr.setRequestHeader('Enclave-CSRF', csrf);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (e) => done(e.loaded);
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        resolve({ ok: xhr.status < 300, message: body.error ? `${body.error.code}: ${body.error.message}` : 'queued for indexing' });
      };
      xhr.onerror = () => resolve({ ok: false, message: 'the upload failed on the network' });
      xhr.send(form);
    });
  }

  document.getElementById('upload').addEventListener('submit', async (event) => {
    event.preventDefault();
    const files = [...document.getElementById('upload-files').files, ...document.getElementById('upload-folder').files];
    if (!files.length || !current) return;
    const labelText = document.getElementById('upload-label').value;
    const bar = document.getElementById('upload-progress');
    const results = document.getElementById('upload-results');
    const total = files.reduce((n, f) => n + f.size, 0) || 1;
    let before = 0;
    bar.hidden = false;
    bar.max = total;
    bar.value = 0;
    results.replaceChildren();
    for (const file of files) {
      const r = await send(file, labelText, (loaded) => { bar.value = before + loaded; });
      before += file.size;
      bar.value = before;
      const li = document.createElement('li');
      li.className = r.ok ? 'ok' : 'failed';
      li.textContent = `${file.webkitRelativePath || file.name}: ${r.message}`;
      results.append(li);
    }
    status.textContent = `Uploaded ${results.querySelectorAll('li.ok').length} of ${files.length} file(s).`;
    event.target.reset();
    await documents();
    await list();
  });

  document.getElementById('kb-search').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!current) return;
    const at = document.getElementById('search-label').value;
    const out = document.getElementById('passages');
    try {
      const found = await api('POST', `/v1/knowledge-bases/${encodeURIComponent(current.id)}/search`,
        { query: document.getElementById('search-query').value, k: 10 }, { 'Enclave-Label': at });
      const items = [];
      for (const hit of found.data) {
        const li = document.createElement('li');
        li.dataset.label = hit.label;
        const mark = document.createElement('span');
        mark.className = 'portion';
        mark.textContent = (await label([hit.label])).portion + ' ';
        const doc = document.createElement('span');
        doc.className = 'cite-doc';
        doc.textContent = hit.document_name + (hit.page ? `, p. ${hit.page}` : '') + ' ';
        const text = document.createElement('span');
        text.className = 'cite-text';
        text.textContent = hit.text;
        li.append(mark, doc, text);
        items.push(li);
        await raise(hit.label);
      }
      out.replaceChildren(...items);
      status.textContent = `${found.data.length} passage(s) readable at ${found.ceiling}.`;
    } catch (e) {
      status.textContent = e.message;
    }
  });

  const create = document.getElementById('new-kb');
  if (create) {
    create.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const k = await api('POST', '/v1/knowledge-bases', {
          name: document.getElementById('kb-name').value.trim(),
          max_label: document.getElementById('kb-max').value,
        });
        status.textContent = `Created ${k.name}.`;
        create.reset();
        await list();
        await show(k);
      } catch (e) {
        status.textContent = e.message;
      }
    });
  }
  list();
})();
