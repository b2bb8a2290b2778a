// Starts Swagger UI on Wharf's two OpenAPI documents, with a selector between them. A file of its
// own, not an inline script, so /docs works under a Content-Security-Policy of 'self' only.
"use strict";
(function () {
  var documents = [
    { url: "/api/openapi.json", name: "api" },
    { url: "/auth/openapi.json", name: "auth" },
  ];
  // ?urls.primaryName=auth opens that document first (Swagger UI writes it there on a switch).
  // Only the names above are taken: queryConfigEnabled stays off, so a link cannot make the page
  // load some other document.
  var wanted = new URLSearchParams(window.location.search).get("urls.primaryName");
  var known = documents.some(function (d) { return d.name === wanted; });

  window.addEventListener("load", function () {
    window.ui = SwaggerUIBundle({
      urls: documents,
      "urls.primaryName": known ? wanted : documents[0].name,
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null, // the default sends every document to an online validator
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      plugins: [SwaggerUIBundle.plugins.DownloadUrl],
      layout: "StandaloneLayout",
    });
  });
})();
