// The "select all" box of a table with bulk actions: ticks or clears every row's box, and
// follows them (ticked when all are, mixed when some are). Without JavaScript the box is
// hidden and the rows are ticked one by one.
document.querySelectorAll("input[data-select-all]").forEach(function (all) {
  var form = all.form;
  var name = all.getAttribute("data-select-all");
  var boxes = function () {
    return Array.prototype.filter.call(form.elements, function (e) {
      return e.type === "checkbox" && e.name === name;
    });
  };
  var follow = function () {
    var list = boxes();
    var ticked = list.filter(function (b) { return b.checked; }).length;
    all.checked = list.length > 0 && ticked === list.length;
    all.indeterminate = ticked > 0 && ticked < list.length;
  };
  all.hidden = false;
  all.addEventListener("change", function () {
    boxes().forEach(function (b) { b.checked = all.checked; });
    follow();
  });
  boxes().forEach(function (b) { b.addEventListener("change", follow); });
  follow();
});
