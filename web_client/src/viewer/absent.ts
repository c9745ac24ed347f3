// Stands in for GeoJS's optional renderers (d3, vtk.js) and touch support (hammerjs): GeoJS
// requires them inside try/catch, so throwing here leaves them out of the bundle (~2.6 MB).
throw new Error('left out of the slidelabel bundle');
