// Adds "slidelabel" to Girder's global navigation, opening slidelabel's web client that the
// plugin serves at <girder>/slidelabel/. Plain DOM, no build step: it waits for Girder's
// navigation list (ul.g-global-nav) to be rendered and adds its entry once.
(function () {
  'use strict';
  var ENTRY = 'g-slidelabel-nav';

  function addEntry() {
    var nav = document.querySelector('ul.g-global-nav');
    if (!nav || nav.querySelector('.' + ENTRY)) {
      return;
    }
    var item = document.createElement('li');
    item.className = 'g-global-nav-li ' + ENTRY;
    var link = document.createElement('a');
    link.className = 'g-nav-link';
    link.href = new URL('slidelabel/', document.baseURI).href;
    link.textContent = 'slidelabel';
    item.appendChild(link);
    nav.appendChild(item);
  }

  new MutationObserver(addEntry).observe(document.documentElement, {childList: true, subtree: true});
  addEntry();
})();
