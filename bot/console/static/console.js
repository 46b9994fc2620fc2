// Small progressive enhancement; every page works without it.
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
});
document.addEventListener("change", function (event) {
  // Filters apply as soon as a choice changes, like a spreadsheet's; the search box waits for Enter.
  var field = event.target;
  if (field.form && field.form.id === "filters" && field.tagName === "SELECT") {
    field.form.submit();
  }
});
