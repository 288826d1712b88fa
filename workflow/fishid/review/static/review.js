// Filters apply as soon as one changes; decision forms ask before writing to config/.
document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (form.dataset.noconfirm === undefined && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

// The label-issue queue's keys (listed on its page). Each decision is the page's own form,
// CSRF token included; a key pressed while typing in a field is the field's.
if (document.body.dataset.keys === "queue") {
  const follow = (id) => {
    const link = document.getElementById(id);
    if (link) window.location.assign(link.href);
  };
  let sent = false; // one decision per page: a repeated key must not post twice
  const submit = (id) => {
    const form = document.getElementById(id);
    if (form && !sent) {
      sent = true;
      form.requestSubmit();
    }
  };
  const actions = {
    k: () => follow("next"),
    j: () => follow("next"),
    n: () => follow("next"),
    p: () => follow("prev"),
    x: () => submit("queue-exclude"),
    r: () => submit("queue-relabel-suggested"),
  };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || target.matches("input, select, textarea")) return;
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });
}
