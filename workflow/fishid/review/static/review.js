// Filters apply as soon as one changes; decision forms ask before writing to config/.
document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (form.dataset.noconfirm === undefined && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});
