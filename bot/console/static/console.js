// Small progressive enhancement; every page works without it.
var TYPED = "steward-typed";

document.addEventListener("submit", function (event) {
  var button = event.submitter;
  var question = button && button.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (button) {
    // One click, one action: a double click must not post the form twice.
    window.setTimeout(function () { button.disabled = true; }, 0);
  }
  keepTyped(event.target);
});

// A refused form comes back as the page with its reason (#error), drawn from what is saved: what was typed into
// the form that was sent is put back, so a long text (minutes, a reason) is not lost to a refusal. Kept in this
// tab's sessionStorage for the next page only; never hidden fields (the CSRF token) or passwords.
function keepTyped(form) {
  if (!form || (form.getAttribute("method") || "").toLowerCase() !== "post") {
    return;
  }
  var fields = [];
  Array.prototype.forEach.call(form.elements, function (field) {
    if (!field.name || /^(hidden|password|file|submit|button|reset)$/.test(field.type)) {
      return;
    }
    var checkable = field.type === "checkbox" || field.type === "radio";
    fields.push({name: field.name, value: field.value, checked: checkable ? field.checked : null});
  });
  try {
    window.sessionStorage.setItem(TYPED, JSON.stringify({action: form.getAttribute("action"), fields: fields}));
  } catch (e) { /* storage full or off: the page works as without this */ }
}

function restoreTyped() {
  var raw = null;
  try {
    raw = window.sessionStorage.getItem(TYPED);
    window.sessionStorage.removeItem(TYPED);
  } catch (e) { return; }
  if (!raw || !document.getElementById("error")) {
    return;
  }
  var typed = JSON.parse(raw);
  var form = Array.prototype.find.call(document.forms, function (f) { return f.getAttribute("action") === typed.action; });
  if (!form) {
    // The form is gone with what changed meanwhile (a need a colleague resolved): show the words under the reason.
    var words = typed.fields.filter(function (f) { return f.checked === null && f.value.trim().length > 1; });
    if (words.length) {
      var kept = document.createElement("div");
      kept.className = "typed";
      kept.id = "typed";
      kept.textContent = "您刚才填写的内容（未保存）：\n" + words.map(function (f) { return f.value; }).join("\n");
      document.getElementById("error").after(kept);
    }
    return;
  }
  var seen = {};
  typed.fields.forEach(function (kept) {
    var same = Array.prototype.filter.call(form.elements, function (f) { return f.name === kept.name; });
    if (kept.checked !== null) {
      same.forEach(function (f) { if (f.value === kept.value) { f.checked = kept.checked; } });
      return;
    }
    var nth = seen[kept.name] || 0;  // several fields of one name: in order
    seen[kept.name] = nth + 1;
    if (same[nth]) {
      same[nth].value = kept.value;
    }
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", restoreTyped);
} else {
  restoreTyped();
}

document.addEventListener("change", function (event) {
  // Filters apply as soon as a choice changes, like a spreadsheet's; the search box waits for Enter.
  var field = event.target;
  if (field.form && field.form.id === "filters" && field.tagName === "SELECT") {
    field.form.submit();
  }
});
