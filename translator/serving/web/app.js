// The translator page: plain DOM, no framework, same-origin calls to /v1/info and /v1/translate.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const source = $("source");
  const beam = $("beam");
  const nbest = $("nbest");
  const button = $("translate");
  const translation = $("translation");
  const meta = $("meta");
  const warnings = $("warnings");
  const nbestList = $("nbest-list");
  const heatmap = $("heatmap");
  const sentencePicker = $("heatmap-sentence");
  const modelCard = $("model-card");
  const errorBox = $("error");

  const JOINER = "\uffed"; // "￭": no space before this token
  let busy = false;
  let attentionEntries = []; // [{label, attention}] for the sentence picker

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  // The API answers errors as {"error": "..."}; anything else (a proxy page, a validation
  // error in another shape, a dropped connection) still becomes one readable line.
  async function errorMessage(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      /* not JSON */
    }
    if (body && typeof body.error === "string") return body.error;
    if (body && body.detail !== undefined) {
      const detail = Array.isArray(body.detail)
        ? body.detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ")
        : String(body.detail);
      return detail;
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  function clampInput(input, lo, hi) {
    const value = Math.round(Number(input.value));
    if (!Number.isFinite(value)) return lo;
    const clamped = Math.min(hi, Math.max(lo, value));
    input.value = String(clamped);
    return clamped;
  }

  function displayToken(token) {
    return token.split(JOINER).join("");
  }

  // Tokens back into text: a leading joiner glues a token to the one before, a trailing one to
  // the one after.
  function detokenize(tokens) {
    let text = "";
    let glueNext = true;
    for (const token of tokens) {
      if (token === "<eos>") continue;
      const glue = glueNext || token.startsWith(JOINER);
      text += (glue ? "" : " ") + displayToken(token);
      glueNext = token.endsWith(JOINER) && token.length > 1;
    }
    return text;
  }

  function formatCount(n) {
    if (n === null || n === undefined) return "—";
    if (n >= 1e9) return (n / 1e9).toFixed(2) + " B";
    if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
    return String(n);
  }

  function exact(n) {
    return typeof n === "number" ? n.toLocaleString("en") : show(n);
  }

  function show(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  // ---- model card ---------------------------------------------------------------------------

  function renderModelCard(info) {
    const model = info.model || {};
    const vocab = info.vocab || {};
    const decode = info.decode || {};
    const pair = `${show(info.src_lang)} → ${show(info.tgt_lang)}`;
    const runName = typeof info.run === "string" ? info.run.split(/[\\/]/).filter(Boolean).pop() : null;
    const rows = [
      ["Run", show(runName), show(info.run)],
      ["Weights", show(info.weights)],
      ["Engine", info.quantization ? `${show(info.engine)} (${info.quantization})` : show(info.engine)],
      ["Languages", pair],
      ["Parameters", exact(info.parameters)],
      [
        "Architecture",
        model.d_model === undefined
          ? "—"
          : `d_model ${model.d_model} · ${model.n_heads} heads · ` +
            `${model.encoder_layers}+${model.decoder_layers} layers · d_ff ${model.d_ff}`,
      ],
      ["Vocabulary", `${exact(vocab.src)} src · ${exact(vocab.tgt)} tgt`],
      [
        "Validation BLEU",
        info.val_bleu === null || info.val_bleu === undefined ? "—" : Number(info.val_bleu).toFixed(1),
      ],
      ["Steps", exact(info.steps)],
      [
        "Decoding",
        `beam ${show(decode.beam_size)} · α ${show(decode.length_penalty)} · ` +
          `max len ${decode.max_len !== null && decode.max_len !== undefined
            ? decode.max_len
            : `${show(decode.max_len_a)}·src + ${show(decode.max_len_b)}`}`,
      ],
    ];
    const list = el("dl");
    for (const [key, value, title] of rows) {
      list.append(el("dt", { text: key }), el("dd", { text: value, title: title || value }));
    }
    modelCard.replaceChildren(list);
    modelCard.dataset.state = "ready";

    const summary = [show(runName)];
    if (info.parameters) summary.push(`${formatCount(info.parameters)} parameters`);
    if (info.val_bleu !== null && info.val_bleu !== undefined) summary.push(`BLEU ${Number(info.val_bleu).toFixed(1)}`);
    $("subtitle").textContent = summary.join(" · ");
    $("subtitle").title = show(info.run);

    const limits = info.limits || {};
    if (limits.max_beam) beam.max = String(limits.max_beam);
    if (limits.max_nbest) nbest.max = String(limits.max_nbest);
    if (decode.beam_size) beam.value = String(Math.min(Number(beam.max), Math.max(1, decode.beam_size)));
    if (decode.nbest) nbest.value = String(Math.min(Number(nbest.max), Math.max(1, decode.nbest)));
  }

  async function loadInfo() {
    try {
      const response = await fetch("/v1/info", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(await errorMessage(response));
      renderModelCard(await response.json());
    } catch (err) {
      modelCard.replaceChildren(el("p", { class: "muted", text: `Model info unavailable: ${err.message}` }));
      modelCard.dataset.state = "error";
    }
  }

  // ---- translation ----------------------------------------------------------------------------

  function requestTexts() {
    // Several non-empty lines are translated as separate texts; otherwise the text goes as it is
    // (an empty one too: the server says what is wrong with it).
    const raw = source.value;
    const lines = raw.split(/\r?\n/).filter((line) => line.trim() !== "");
    return lines.length > 1 ? lines : raw;
  }

  function setBusy(on) {
    busy = on;
    button.disabled = on;
    button.textContent = on ? "Translating…" : "Translate";
    translation.setAttribute("aria-busy", on ? "true" : "false");
    document.body.classList.toggle("busy", on);
    if (on) meta.textContent = "translating…";
  }

  async function translate() {
    if (busy) return;
    const beamSize = clampInput(beam, 1, Number(beam.max) || 10);
    const nbestSize = clampInput(nbest, 1, Number(nbest.max) || 5);
    clearError();
    setBusy(true);
    try {
      const response = await fetch("/v1/translate", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({
          text: requestTexts(),
          beam_size: beamSize,
          nbest: nbestSize,
          attention: true,
        }),
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      renderResult(await response.json());
    } catch (err) {
      showError(err instanceof TypeError ? `Cannot reach the server: ${err.message}` : err.message);
      meta.textContent = translation.childElementCount ? "previous translation" : "";
      document.body.classList.add("stale");
    } finally {
      setBusy(false);
    }
  }

  function renderResult(result) {
    document.body.classList.remove("stale");
    const items = result.translations || [];
    translation.replaceChildren(...items.map((item) => el("p", { text: item.text })));

    const parts = [];
    if (typeof result.seconds === "number") parts.push(`${result.seconds.toFixed(2)} s`);
    if (result.engine) parts.push(result.engine);
    if (result.beam_size !== undefined) parts.push(result.beam_size === 1 ? "greedy" : `beam ${result.beam_size}`);
    if (result.alpha !== undefined && result.alpha !== null) parts.push(`α ${result.alpha}`);
    meta.textContent = parts.join(" · ");

    const allWarnings = items.flatMap((item) => item.warnings || []);
    warnings.replaceChildren(...allWarnings.map((w) => el("li", { text: w })));
    warnings.hidden = allWarnings.length === 0;

    renderNbest(items);

    attentionEntries = [];
    items.forEach((item, i) => {
      (item.attention || []).forEach((attention, j) => {
        const text = detokenize(attention.source);
        const label = `${items.length > 1 ? `Text ${i + 1}, ` : ""}sentence ${j + 1}: ${text}`;
        attentionEntries.push({ label: label.length > 70 ? label.slice(0, 69) + "…" : label, attention });
      });
    });
    sentencePicker.replaceChildren(
      ...attentionEntries.map((entry, k) => el("option", { value: String(k), text: entry.label })),
    );
    sentencePicker.hidden = attentionEntries.length < 2;
    if (attentionEntries.length) renderHeatmap(attentionEntries[0].attention);
    else heatmap.replaceChildren(el("p", { class: "muted", text: "No attention weights in this answer." }));
  }

  function renderNbest(items) {
    const withNbest = items.filter((item) => Array.isArray(item.nbest) && item.nbest.length);
    if (!withNbest.length) {
      nbestList.replaceChildren(
        el("p", { class: "muted", text: "Set n-best above 1 to see alternatives with their scores." }),
      );
      return;
    }
    const blocks = [];
    items.forEach((item, i) => {
      if (!Array.isArray(item.nbest) || !item.nbest.length) return;
      const list = el("ol");
      for (const hyp of item.nbest) {
        list.append(
          el(
            "li",
            null,
            el("span", { class: "hyp", text: hyp.text, lang: "de" }),
            el("span", { class: "score", text: Number(hyp.score).toFixed(3), title: "log-probability score" }),
          ),
        );
      }
      if (items.length > 1) blocks.push(el("p", { class: "nbest-label", text: `Text ${i + 1}` }));
      blocks.push(list);
    });
    nbestList.replaceChildren(...blocks);
  }

  // ---- attention heatmap ----------------------------------------------------------------------

  // White → the accent blue, so that the darkest cell reads as "all the weight here".
  const LOW = [247, 249, 252];
  const HIGH = [23, 64, 120];

  function shade(weight) {
    const w = Math.max(0, Math.min(1, Number(weight) || 0));
    const t = Math.pow(w, 0.7); // small weights stay faintly visible
    const rgb = LOW.map((lo, k) => Math.round(lo + (HIGH[k] - lo) * t));
    return `rgb(${rgb.join(",")})`;
  }

  function renderHeatmap(attention) {
    const src = attention.source || [];
    const tgt = attention.target || [];
    const weights = attention.weights || [];
    const rotate = src.some((t) => displayToken(t).length > 3);

    const corner = el("th", { class: "corner", scope: "col" });
    const head = el("tr", null, corner);
    src.forEach((token, j) => {
      head.append(
        el("th", { scope: "col", class: "src", title: `${token} (source ${j + 1})` },
          el("span", { text: displayToken(token) })),
      );
    });

    const body = el("tbody");
    tgt.forEach((token, i) => {
      const row = el("tr", null, el("th", { scope: "row", class: "tgt", title: `${token} (target ${i + 1})`, text: displayToken(token) }));
      const line = weights[i] || [];
      src.forEach((srcToken, j) => {
        const w = Number(line[j]) || 0;
        const cell = el("td", { title: `${token} ← ${srcToken}: ${w.toFixed(3)}`, "data-weight": w.toFixed(4) });
        cell.style.background = shade(w);
        row.append(cell);
      });
      body.append(row);
    });

    const table = el("table", { class: rotate ? "rotate" : null, "data-rows": tgt.length, "data-cols": src.length },
      el("thead", null, head), body);
    // A long sentence takes the page's whole width (the model card moves below it) rather than
    // scroll inside its column.
    const main = heatmap.closest("main");
    main.classList.remove("wide-heatmap");
    heatmap.replaceChildren(table);
    if (heatmap.scrollWidth > heatmap.clientWidth + 1) main.classList.add("wide-heatmap");
  }

  // ---- wiring ---------------------------------------------------------------------------------

  button.addEventListener("click", translate);
  sentencePicker.addEventListener("change", () => {
    const entry = attentionEntries[Number(sentencePicker.value)];
    if (entry) renderHeatmap(entry.attention);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      translate();
    }
  });
  loadInfo();
})();
