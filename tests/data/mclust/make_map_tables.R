# mclust 6 under its default conjugate prior, priorControl(), on Old Faithful (faithful.csv):
# 1. map_mstep.csv: one M-step, mstep(X, modelName, z, prior = priorControl()), from fixed soft
#    responsibilities map_z.csv (hc's 3-cluster partition mixed with uniform noise), for every
#    model whose M-step takes a prior; the others (VEE, EVE, VVE, EVV) return no estimate.
#    map_me_step.csv: the same from one M-step of mclust's EM, me(X, modelName, z, prior =
#    priorControl(), control = emControl(itmax = 1)): where mstep and me disagree (EEI, EVI:
#    a count G in the volume's denominator; EEV: mstep drops the mean prior) Mclust fits with me.
# 2. map_bic.csv: Mclust's BIC under the prior for G = 1..5 (its sign: 2 logL - p log n);
#    map_bic_iris.csv: the same on iris (iris.csv).
# Run: Rscript make_map_tables.R   (Debian: apt-get install r-cran-mclust)
suppressMessages(library(mclust))
X <- as.matrix(read.csv("faithful.csv"))
set.seed(1)
G <- 3
z <- unmap(hclass(hc(X), G))
z <- 0.8 * z + 0.2 * matrix(runif(nrow(X) * G), ncol = G)
z <- z / rowSums(z)
write.csv(z, "map_z.csv", row.names = FALSE)
rows <- list()
for (m in mclust.options("emModelNames")) {
  res <- suppressWarnings(mstep(X, modelName = m, z = z, prior = priorControl()))
  ok <- all(res$parameters$pro > 0)
  # One row per model: weights, means (p x G, by column) and covariances (p x p x G, by column).
  rows[[m]] <- data.frame(model = m, has_map = ok,
    pro = paste(format(res$parameters$pro, digits = 17), collapse = " "),
    mean = paste(format(as.vector(res$parameters$mean), digits = 17), collapse = " "),
    sigma = if (ok) paste(format(as.vector(res$parameters$variance$sigma), digits = 17), collapse = " ") else "")
}
write.csv(do.call(rbind, rows), "map_mstep.csv", row.names = FALSE)
rows <- list()
for (m in mclust.options("emModelNames")) {
  res <- suppressWarnings(me(X, modelName = m, z = z, prior = priorControl(),
                             control = emControl(itmax = 1)))
  ok <- !is.null(res$parameters$variance$sigma) && all(is.finite(res$parameters$variance$sigma))
  if (!ok) next
  rows[[m]] <- data.frame(model = m, has_map = ok,
    pro = paste(format(res$parameters$pro, digits = 17), collapse = " "),
    mean = paste(format(as.vector(res$parameters$mean), digits = 17), collapse = " "),
    sigma = paste(format(as.vector(res$parameters$variance$sigma), digits = 17), collapse = " "))
}
write.csv(do.call(rbind, rows), "map_me_step.csv", row.names = FALSE)
b <- mclustBIC(X, G = 1:5, prior = priorControl())
out <- as.data.frame(unclass(b)[, , drop = FALSE])
out$G <- as.integer(rownames(b))
write.csv(out, "map_bic.csv", row.names = FALSE)
print(b)
b <- mclustBIC(as.matrix(read.csv("iris.csv")), G = 1:5, prior = priorControl())
out <- as.data.frame(unclass(b)[, , drop = FALSE])
out$G <- as.integer(rownames(b))
write.csv(out, "map_bic_iris.csv", row.names = FALSE)
print(b)
